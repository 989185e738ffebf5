"""The `prefgen` command: one sub-command per stage, plus maintenance commands.

Every stage runs standalone on explicit paths (`prefgen ingest --raw DIR --out DIR`)
and, with no paths, as the DVC stage reading params.yaml. Results go to stdout
as one JSON object on the last line; progress and messages go to stderr.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from prefgen import config as configs
from prefgen.config import DEFAULT_PARAMS, ConfigError, IngestConfig, ingest_config, load_params
from prefgen.registry import cli as registry_cli
from prefgen.registry.cli import fail as _fail

app = typer.Typer(add_completion=False, no_args_is_help=True, help="prefgen: images that fit a social audience.")


def _params(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            _fail(f"params file not found: {path} (run from the project root or pass --params)")
        return None
    try:
        return load_params(path)
    except ConfigError as err:
        _fail(str(err))
    return None


def _print_result(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")


@app.command()
def ingest(
    raw: Annotated[Path | None, typer.Option(help="Folder of raw log files (default: params ingest.raw_dir).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder of the tables (default: params ingest.out_dir).")] = None,
    params: Annotated[Path, typer.Option(help="params.yaml to read the [ingest] section from.")] = DEFAULT_PARAMS,
    metrics: Annotated[Path | None, typer.Option(help="Write the counts here (default: params ingest.metrics).")] = None,
    mlflow: Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help="Log an MLflow run (default: when params.yaml is found).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
) -> None:
    """Validate raw social logs and write Parquet tables; bad rows go to quarantine."""
    from prefgen.data.ingest import IngestError
    from prefgen.stages import ingest as stage

    loaded = _params(params, required=raw is None or out is None)
    try:
        cfg = ingest_config(loaded) if loaded else IngestConfig()
    except ConfigError as err:
        _fail(str(err))
    loaded = _tracked(loaded, params, mlflow)
    metrics_path = metrics or (Path(cfg.metrics) if loaded and raw is None and out is None else None)
    try:
        counts = stage.run(cfg, raw or Path(cfg.raw_dir), out or Path(cfg.out_dir), loaded,
                           metrics_path, Path.cwd(), progress=progress)
    except IngestError as err:
        _fail(str(err))
    _print_result(counts)


@app.command()
def forget(
    individual_id: Annotated[str, typer.Argument(help="The raw id of the individual to remove.")],
    tables: Annotated[Path | None, typer.Option(help="Ingest output folder (default: params ingest.out_dir).")] = None,
    params: Annotated[Path, typer.Option(help="params.yaml (for the default tables folder).")] = DEFAULT_PARAMS,
    by: Annotated[str | None, typer.Option(help="Who asked for the deletion (default: the current user).")] = None,
) -> None:
    """Remove one individual's events, follows and memberships (a deletion request)."""
    from prefgen.data.forget import ForgetError, forget as forget_individual

    loaded = _params(params, required=tables is None)
    folder = tables or Path(ingest_config(loaded or {}).out_dir)
    requested_by = by or os.environ.get("PREFGEN_USER") or getpass.getuser()
    try:
        record = forget_individual(folder, individual_id, requested_by)
    except ForgetError as err:
        _fail(str(err))
    typer.echo(f"forgot 1 individual: {record['events_removed']} events, {record['follows_removed']} follows, "
               f"{record['memberships_removed']} memberships removed; the next retrain re-runs ingest and "
               "everything downstream", err=True)
    _print_result(record)


def _stage_setup(params: Path, section: str, standalone: bool, mlflow: bool | None):
    """(the params, None without a params file; the stage's typed config) for a stage command."""
    loaded = _params(params, required=not standalone)
    try:
        cfg = configs.section_config(loaded or {}, section)
    except ConfigError as err:
        _fail(str(err))
    return _tracked(loaded, params, mlflow), cfg


def _tracked(loaded: dict | None, params: Path, mlflow: bool | None) -> dict | None:
    """The params with tracking switched as --mlflow/--no-mlflow asks. --no-mlflow only skips the
    MLflow run: the stage still writes its metrics file, which DVC and the reader of a scratch run want."""
    if mlflow and loaded is None:
        _fail(f"--mlflow needs a params file for the tracking section: {params} not found")
    if loaded is None or mlflow is None:
        return loaded
    return loaded | {"tracking": (loaded.get("tracking") or {}) | {"enabled": mlflow}}


ParamsOpt = Annotated[Path, typer.Option(help="params.yaml to read the stage's section from.")]
MlflowOpt = Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help="Log an MLflow run (default: when params.yaml is found).")]


@app.command()
def synth(
    out: Annotated[Path | None, typer.Option(help="Raw logs go to OUT/<world> (default: params synth.out_dir).")] = None,
    truth: Annotated[Path | None, typer.Option(help="Ground truth goes to TRUTH/<world> (default: params synth.truth_dir).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    mlflow: MlflowOpt = None,
) -> None:
    """Generate the synthetic social world (raw logs, PNGs, ground truth)."""
    from prefgen.data.worlds import FrozenWorldError
    from prefgen.stages import synth as stage

    loaded, cfg = _stage_setup(params, "synth", out is not None and truth is not None, mlflow)
    cfg = replace(cfg, out_dir=str(out or cfg.out_dir), truth_dir=str(truth or cfg.truth_dir))
    metrics = Path(cfg.metrics) if loaded else None
    try:
        _print_result(stage.run(cfg, loaded, metrics, Path.cwd()))
    except FrozenWorldError as err:
        _fail(str(err))


@app.command()
def split(
    tables: Annotated[Path | None, typer.Option(help="Ingest output folder (default: params split.tables_dir).")] = None,
    out: Annotated[Path | None, typer.Option(help="Split Parquet file (default: params split.out).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    mlflow: MlflowOpt = None,
) -> None:
    """Assign every image to train | val | cold."""
    from prefgen.stages import split as stage

    loaded, cfg = _stage_setup(params, "split", tables is not None and out is not None, mlflow)
    try:
        result = stage.run(replace(cfg, tables_dir=str(tables or cfg.tables_dir), out=str(out or cfg.out)),
                           loaded, Path(cfg.metrics) if loaded else None, Path.cwd())
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    _print_result(result)


@app.command()
def centrality(
    tables: Annotated[Path | None, typer.Option(help="Ingest output folder (default: params centrality.tables_dir).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: params centrality.out_dir).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    mlflow: MlflowOpt = None,
) -> None:
    """Per-individual and per-(group, member) centrality features of the follow graph."""
    from prefgen.stages import centrality as stage

    loaded, cfg = _stage_setup(params, "centrality", tables is not None and out is not None, mlflow)
    result = stage.run(cfg, tables or Path(cfg.tables_dir), out or Path(cfg.out_dir), loaded,
                       Path(cfg.metrics) if loaded else None, Path.cwd())
    _print_result(result)


@app.command()
def reference(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Baseline scores on the synthetic world (reads its ground truth: evaluation only)."""
    from prefgen.stages import reference as stage

    loaded, cfg = _stage_setup(params, "reference", False, mlflow)
    everything = load_params(params)
    world = configs.synth_config(everything)
    images_dir = Path(ingest_config(everything).raw_dir)
    try:
        result = stage.run(cfg, world.world, images_dir, loaded, Path(cfg.metrics), Path.cwd())
    except FileNotFoundError as err:
        _fail(str(err))
    _print_result(result)


@app.command("train-graph")
def train_graph(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 1: train the social preference encoder on the train split (resumes from its checkpoint)."""
    from prefgen.stages import train_graph as stage

    loaded, cfg = _stage_setup(params, "train_graph", False, mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("train-clip")
def train_clip(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 2: train the semantic image tower (frozen MiniLM text tower) on train (image, caption) pairs."""
    from prefgen.stages import train_clip as stage

    loaded, cfg = _stage_setup(params, "train_clip", False, mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("visual-features")
def visual_features(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 2: semantic, style and colour vectors of every image (incremental)."""
    from prefgen.stages.common import run_stage
    from prefgen.vision import features

    loaded, cfg = _stage_setup(params, "visual_features", False, mlflow)
    _print_result(run_stage("visual_features", loaded, Path.cwd(), Path(cfg.metrics) if loaded else None, lambda: features.run(cfg),
                            not_metrics=("skipped", "parts")))


@app.command("train-mapper")
def train_mapper(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 2: train the GAN preference mapper (resumes from its checkpoint)."""
    from prefgen.stages import train_mapper as stage

    loaded, cfg = _stage_setup(params, "train_mapper", False, mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("train-vq")
def train_vq(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 3.1: train the VQ autoencoder, or load the local one params.yaml names (resumes from its checkpoint)."""
    from prefgen.stages import train_vq as stage

    loaded, cfg = _stage_setup(params, "train_vq", False, mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("train-w")
def train_w(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 3.2: train W, the map from Step 1's image space to the text space."""
    from prefgen.stages import train_w as stage

    loaded, cfg = _stage_setup(params, "train_w", False, mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("train-diffusion")
def train_diffusion(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 3.3: train the conditioned latent diffusion model (resumes; runs unchanged under torchrun)."""
    from prefgen.stages import train_diffusion as stage

    loaded, cfg = _stage_setup(params, "train_diffusion", False, mlflow)
    result = stage.run(cfg, loaded, Path.cwd())
    if result:  # ranks other than 0 print nothing
        _print_result(result)


@app.command("train-oracle")
def train_oracle(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """The evaluation oracle's shape and pattern classifier, on its own separately seeded renders."""
    from prefgen.stages import train_oracle as stage

    loaded, cfg = _stage_setup(params, "train_oracle", False, mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


eval_app = typer.Typer(no_args_is_help=True, help="Evaluation against the synthetic world's ground truth.")
app.add_typer(eval_app, name="eval")


@eval_app.command("graph")
def eval_graph(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """influence_spearman: learned member attention against true influence."""
    from prefgen.eval import graph
    from prefgen.stages.common import run_stage

    loaded, cfg = _stage_setup(params, "reference", False, mlflow)
    everything = load_params(params)
    world = configs.synth_config(everything).world
    model_dir = Path(configs.train_graph_config(everything).out_dir)
    metrics = Path("data/metrics/eval_graph.json")
    body = lambda: graph.run(Path(cfg.truth_dir), world, model_dir, cfg.min_group_size)  # noqa: E731
    _print_result(run_stage("eval_graph", loaded, Path.cwd(), metrics, body, not_metrics=("world", "world_sha256")))


@eval_app.command("mapper")
def eval_mapper(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None,
                ablations: Annotated[bool, typer.Option("--ablations", help="Retrain per visual part and without the adversarial terms; print the table.")] = False,
                json_path: Annotated[Path | None, typer.Option("--json", help="Write the ablation rows here.")] = None) -> None:
    """Cold-start AUC of the mapper on cold images against VBPR, random and the oracle; utility_spearman."""
    from prefgen.eval import mapper
    from prefgen.stages.common import run_stage

    loaded, cfg = _stage_setup(params, "train_mapper", False, mlflow)
    everything = load_params(params)
    world, truth_dir = configs.synth_config(everything).world, Path(configs.reference_config(everything).truth_dir)
    log = lambda line: typer.echo(line, err=True)  # noqa: E731
    if ablations:
        rows = mapper.ablations(cfg, truth_dir, world, log=log)
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(rows, indent=2) + "\n")
        return
    body = lambda: mapper.evaluate(cfg, truth_dir, world, log=log)  # noqa: E731
    _print_result(run_stage("eval_mapper", loaded, Path.cwd(), Path("data/metrics/eval_mapper.json"), body,
                            not_metrics=("world", "world_sha256")))


@eval_app.command("generation")
def eval_generation(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Personalisation win rate, text consistency, quality and the guidance ablations, judged by the oracle."""
    from prefgen.stages import eval_generation as stage

    loaded, cfg = _stage_setup(params, "eval_generation", False, mlflow)
    everything = load_params(params)
    try:
        sampler, visual = configs.section_config(everything, "sampler"), configs.section_config(everything, "visual_features")
    except ConfigError as err:
        _fail(str(err))
    world = configs.synth_config(everything).world
    log = lambda line: typer.echo(line, err=True)  # noqa: E731  (stdout carries only the JSON result)
    _print_result(stage.run(cfg, sampler, visual, world, loaded, Path.cwd(), log))


import_app = typer.Typer(no_args_is_help=True, help="Convert public datasets into the raw log format.")
app.add_typer(import_app, name="import")


@import_app.command("grouprec")
def import_grouprec(
    folder: Annotated[Path, typer.Argument(help="A dataset folder in the AGREE / ConsRec format.")],
    out: Annotated[Path, typer.Option(help="Raw log folder to write (events.jsonl, images.jsonl, eval/).")],
) -> None:
    """AGREE/ConsRec group-recommendation files -> raw logs; test and negative files copied to OUT/eval/."""
    from prefgen.preference.grouprec import FormatError, import_to_raw_logs

    try:
        counts = import_to_raw_logs(folder, out)
    except FormatError as err:
        _fail(str(err))
    _print_result(counts)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks on public data.")
app.add_typer(bench_app, name="bench")


@bench_app.command("grouprec")
def bench_grouprec(
    data: Annotated[Path, typer.Option(help="A dataset folder in the AGREE / ConsRec format.")],
    model: Annotated[str, typer.Option(help="prefgen or popularity.")] = "prefgen",
    seeds: Annotated[int, typer.Option(help="Training seeds; metrics are the mean over seeds.")] = 1,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    no_influence: Annotated[bool, typer.Option("--no-influence", help="Ablation: mean over members instead of attention.")] = False,
    no_group_graph: Annotated[bool, typer.Option("--no-group-graph", help="Ablation: no group-member propagation.")] = False,
    no_centrality: Annotated[bool, typer.Option("--no-centrality", help="Ablation: attention without centrality features.")] = False,
    max_epochs: Annotated[int | None, typer.Option(help="Override params train_graph.max_epochs.")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Seeds trained at once, each in its own process (same figures as one at a time).")] = 1,
    refit: Annotated[bool | None, typer.Option("--refit/--no-refit", help="After validation chose the epoch, retrain on every training line, validation's too, for that many epochs (default: params train_graph.refit).")] = None,
    influence_folds: Annotated[int | None, typer.Option(min=0, help="Folds of the cross-validation that picks the attention's member features; 0: it reads every feature (default: params train_graph.influence_folds).")] = None,
) -> None:
    """Step 1 against popularity on group-recommendation data (1 + 100 protocol, ties in expectation)."""
    from prefgen.preference import bench
    from prefgen.preference.grouprec import FormatError

    # The benchmark measures Step 1 as the quality profile trains it, whatever profile params.yaml has active.
    cfg = configs.train_graph_config((_params(params, required=False) or {}) | {"profile": "quality"})
    cfg = replace(cfg, use_influence=not no_influence, use_group_graph=not no_group_graph, use_centrality=not no_centrality,
                  max_epochs=max_epochs or cfg.max_epochs, refit=cfg.refit if refit is None else refit,
                  influence_folds=cfg.influence_folds if influence_folds is None else influence_folds)
    if model not in ("prefgen", "popularity"):
        _fail(f"--model must be prefgen or popularity, not {model!r}")
    log = lambda line: typer.echo(line, err=True)  # noqa: E731
    try:
        result = bench.bench_popularity(data, log=log) if model == "popularity" else bench.bench(data, cfg, seeds, log=log, jobs=jobs)
    except FormatError as err:
        _fail(str(err))
    typer.echo(bench.format_table(result, model), err=True)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    _print_result({task: result[task] for task in bench.TASKS})


registry_cli.add_commands(app)  # register, bundles, promote, rollback, generate, lineage, regenerate (prefgen/registry/cli.py)

if __name__ == "__main__":
    app()
