"""The `prefgen` command: one sub-command per stage, plus maintenance commands.

Every stage runs standalone on explicit paths (`prefgen ingest --raw DIR --out DIR`)
and, with no paths, as the DVC stage reading params.yaml. A standalone run leaves the
pipeline's DVC metrics and MLflow lineage alone: metrics only with --metrics, an MLflow
run only with --mlflow, tagged standalone. Results go to stdout as one JSON object on
the last line; progress and messages go to stderr; every error is one `error:` line, exit 2.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from prefgen import config as configs
from prefgen.config import DEFAULT_PARAMS, ConfigError, ingest_config, load_params
from prefgen.registry import cli as registry_cli
from prefgen.registry.cli import fail as _fail


class _Commands(TyperGroup):
    """Every command's ConfigError (params.yaml, a campaign file), wherever raised, ends as `fail`'s one line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as err:
            _fail(str(err))


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, help="prefgen: images that fit a social audience.")


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
    metrics: Annotated[Path | None, typer.Option(help="Write the counts here (default: params ingest.metrics; none with --raw or --out).")] = None,
    mlflow: Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help="Log an MLflow run (default: when params.yaml is found; "
                                                "with --raw or --out only when asked, tagged standalone).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
) -> None:
    """Validate raw social logs and write Parquet tables; bad rows go to quarantine."""
    from prefgen.data.ingest import IngestError
    from prefgen.stages import ingest as stage

    loaded, cfg, metrics_path = _paths_stage_setup(params, "ingest", (raw, out), mlflow, metrics)
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
    params: Annotated[Path, typer.Option(help="params.yaml (tables folder, forget.images, tracking store).")] = DEFAULT_PARAMS,
    by: Annotated[str | None, typer.Option(help="Who asked for the deletion (default: the current user).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Record the request even if the id is in no table.")] = False,
    report: Annotated[bool, typer.Option("--report", help="Change nothing: list what still mentions them, by sha256.")] = False,
) -> None:
    """Remove one individual everywhere the tables and the registry know them (a deletion request; docs/DATA.md)."""
    from prefgen.data.forget import ForgetError, forget as forget_individual

    loaded = _params(params, required=tables is None)
    folder = tables or Path(ingest_config(loaded or {}).out_dir)
    policy = configs.section_config(loaded, "forget") if loaded else configs.ForgetConfig()
    if report:
        from prefgen.registry.forgotten import report_from_params

        _print_result(report_from_params(loaded, Path.cwd(), folder, individual_id))
        return
    try:
        record = forget_individual(folder, individual_id, by or os.environ.get("PREFGEN_USER") or getpass.getuser(),
                                   images=policy.images, force=force)
    except ForgetError as err:
        _fail(str(err))
    tagged = _tag_bundles(loaded, individual_id)  # a repeat tags what a failed first try left untagged
    if record.get("already_forgotten"):
        typer.echo(f"already forgotten (sha256 {record['subject_sha256'][:12]}, asked {record['requested_at']}): "
                   f"nothing changed{f'; bundle versions {tagged} are tagged' if tagged else ''}", err=True)
        return
    record["bundle_versions_tagged"] = tagged
    typer.echo(f"forgot 1 individual: {record['events_removed']} events, {record['follows_removed']} follows, "
               f"{record['memberships_removed']} memberships removed, {record['images_removed']} images "
               f"{'removed' if policy.images == 'drop' else 'unlinked'}; {len(record['bundle_versions_tagged'])} bundle "
               "version(s) tagged; the next retrain re-runs ingest and everything downstream", err=True)
    _print_result(record)


def _tag_bundles(loaded: dict[str, Any] | None, individual_id: str) -> list[str]:
    """The registered bundle versions tagged as holding a just-forgotten individual (none without params.yaml)."""
    if loaded is None:
        return []
    from mlflow.exceptions import MlflowException  # MLflow: imported only where a registry may exist

    from prefgen.registry.forgotten import tag_from_params

    try:
        return tag_from_params(loaded, Path.cwd(), individual_id)
    except (MlflowException, OSError) as err:
        _fail(f"could not tag the registry's bundles ({type(err).__name__}: {err}); the tables are done or unchanged: "
              "run the same `prefgen forget` again once the tracking store is reachable")
    return []


def _stage_setup(params: Path, section: str, mlflow: bool | None) -> tuple[dict[str, Any] | None, Any]:
    """(the params, tracking switched as --mlflow/--no-mlflow asks; the stage's typed config) for a pipeline stage."""
    loaded = _params(params, required=True)
    return _tracked(loaded, params, mlflow), configs.section_config(loaded, section)


def _paths_stage_setup(params: Path, section: str, paths: tuple[Path | None, ...], mlflow: bool | None,
                       metrics: Path | None) -> tuple[dict[str, Any] | None, Any, Path | None]:
    """(the params its MLflow run gets, None for no run; the stage's typed config; its metrics file) for a stage
    command that also runs on explicit paths.

    With no path given it is the pipeline's DVC stage. With any path given it is a standalone run: a params file
    is needed only for the paths not given, metrics go only where --metrics says, and an MLflow run is logged
    only with --mlflow, tagged standalone, so neither DVC's metrics nor lineage can take it for the pipeline's.
    """
    given = [path for path in paths if path is not None]
    loaded = _params(params, required=len(given) < len(paths))
    cfg = configs.section_config(loaded, section)
    if not given:
        return _tracked(loaded, params, mlflow), cfg, metrics or Path(cfg.metrics)
    if not mlflow:
        return None, cfg, metrics
    return _tracked(loaded, params, True, standalone=True), cfg, metrics


def _tracked(loaded: dict | None, params: Path, mlflow: bool | None, standalone: bool = False) -> dict | None:
    """The params with tracking switched as --mlflow/--no-mlflow asks. --no-mlflow only skips the
    MLflow run: the stage still writes its metrics file, which DVC and the reader of a scratch run want."""
    if mlflow and loaded is None:
        _fail(f"--mlflow needs a params file for the tracking section: {params} not found")
    if loaded is None or mlflow is None:
        return loaded
    if mlflow:
        configs.tracking_config(loaded)  # a missing or wrong tracking section is named, not replaced by defaults
    switches = {"enabled": mlflow} | ({"standalone": True} if standalone else {})
    return loaded | {"tracking": (loaded.get("tracking") or {}) | switches}


ParamsOpt = Annotated[Path, typer.Option(help="params.yaml to read the stage's section from.")]
MlflowOpt = Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help="Log an MLflow run (default: when params.yaml is found).")]
PathsMlflowOpt = Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help="Log an MLflow run (default: when params.yaml is "
                                                     "found; with an explicit path only when asked, tagged standalone).")]
MetricsOpt = Annotated[Path | None, typer.Option(help="Write the metrics here (default: the params section's metrics file; "
                                                 "none with an explicit path).")]


@app.command()
def synth(
    out: Annotated[Path | None, typer.Option(help="Raw logs go to OUT/<world> (default: params synth.out_dir).")] = None,
    truth: Annotated[Path | None, typer.Option(help="Ground truth goes to TRUTH/<world> (default: params synth.truth_dir).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    mlflow: PathsMlflowOpt = None,
    metrics: MetricsOpt = None,
) -> None:
    """Generate the synthetic social world (raw logs, PNGs, ground truth)."""
    from prefgen.data.worlds import FrozenWorldError
    from prefgen.stages import synth as stage

    loaded, cfg, metrics_path = _paths_stage_setup(params, "synth", (out, truth), mlflow, metrics)
    cfg = replace(cfg, out_dir=str(out or cfg.out_dir), truth_dir=str(truth or cfg.truth_dir))
    try:
        _print_result(stage.run(cfg, loaded, metrics_path, Path.cwd()))
    except FrozenWorldError as err:
        _fail(str(err))


@app.command()
def split(
    tables: Annotated[Path | None, typer.Option(help="Ingest output folder (default: params split.tables_dir).")] = None,
    out: Annotated[Path | None, typer.Option(help="Split Parquet file (default: params split.out).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    mlflow: PathsMlflowOpt = None,
    metrics: MetricsOpt = None,
) -> None:
    """Assign every image to train | val | cold."""
    from prefgen.stages import split as stage

    loaded, cfg, metrics_path = _paths_stage_setup(params, "split", (tables, out), mlflow, metrics)
    try:
        result = stage.run(replace(cfg, tables_dir=str(tables or cfg.tables_dir), out=str(out or cfg.out)),
                           loaded, metrics_path, Path.cwd())
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    _print_result(result)


@app.command()
def centrality(
    tables: Annotated[Path | None, typer.Option(help="Ingest output folder (default: params centrality.tables_dir).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: params centrality.out_dir).")] = None,
    split: Annotated[Path | None, typer.Option(help="Split Parquet file of those tables: activity counts only interactions "
                                                    "with its train images (default: params centrality.split; required with --tables).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    mlflow: PathsMlflowOpt = None,
    metrics: MetricsOpt = None,
) -> None:
    """Per-individual and per-(group, member) centrality features of the follow graph."""
    from prefgen.stages import centrality as stage

    if tables is not None and split is None:  # the pipeline's split belongs to the pipeline's tables, not these
        _fail("--tables needs --split: centrality counts activity only on the train images of those tables' split "
              "(make one with `prefgen split --tables DIR --out FILE`)")
    loaded, cfg, metrics_path = _paths_stage_setup(params, "centrality", (tables, out, split), mlflow, metrics)
    try:
        result = stage.run(cfg, tables or Path(cfg.tables_dir), out or Path(cfg.out_dir), split or Path(cfg.split), loaded,
                           metrics_path, Path.cwd())
    except FileNotFoundError as err:
        _fail(str(err))
    _print_result(result)


@app.command()
def reference(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Baseline scores on the synthetic world (reads its ground truth: evaluation only)."""
    from prefgen.stages import reference as stage

    loaded, cfg = _stage_setup(params, "reference", mlflow)
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

    loaded, cfg = _stage_setup(params, "train_graph", mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("train-clip")
def train_clip(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 2: train the semantic image tower (frozen MiniLM text tower) on train (image, caption) pairs."""
    from prefgen.stages import train_clip as stage

    loaded, cfg = _stage_setup(params, "train_clip", mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("visual-features")
def visual_features(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 2: semantic, style and colour vectors of every image (incremental)."""
    from prefgen.stages.common import run_stage
    from prefgen.vision import features

    loaded, cfg = _stage_setup(params, "visual_features", mlflow)
    _print_result(run_stage("visual_features", loaded, Path.cwd(), Path(cfg.metrics) if loaded else None, lambda: features.run(cfg),
                            not_metrics=("skipped", "parts")))


@app.command("train-mapper")
def train_mapper(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 2: train the GAN preference mapper (resumes from its checkpoint)."""
    from prefgen.stages import train_mapper as stage

    loaded, cfg = _stage_setup(params, "train_mapper", mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("train-vq")
def train_vq(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 3.1: train the VQ autoencoder, or load the local one params.yaml names (resumes from its checkpoint)."""
    from prefgen.stages import train_vq as stage

    loaded, cfg = _stage_setup(params, "train_vq", mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("train-w")
def train_w(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 3.2: train W, the map from Step 1's image space to the text space."""
    from prefgen.stages import train_w as stage

    loaded, cfg = _stage_setup(params, "train_w", mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


@app.command("train-diffusion")
def train_diffusion(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """Step 3.3: train the conditioned latent diffusion model (resumes; runs unchanged under torchrun)."""
    from prefgen.stages import train_diffusion as stage

    loaded, cfg = _stage_setup(params, "train_diffusion", mlflow)
    result = stage.run(cfg, loaded, Path.cwd())
    if result:  # ranks other than 0 print nothing
        _print_result(result)


@app.command("train-oracle")
def train_oracle(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """The evaluation oracle's shape and pattern classifier, on its own separately seeded renders."""
    from prefgen.stages import train_oracle as stage

    loaded, cfg = _stage_setup(params, "train_oracle", mlflow)
    _print_result(stage.run(cfg, loaded, Path.cwd()))


eval_app = typer.Typer(no_args_is_help=True, help="Evaluation against the synthetic world's ground truth.")
app.add_typer(eval_app, name="eval")


@eval_app.command("graph")
def eval_graph(params: ParamsOpt = DEFAULT_PARAMS, mlflow: MlflowOpt = None) -> None:
    """influence_spearman: learned member attention against true influence."""
    from prefgen.eval import graph
    from prefgen.stages.common import run_stage

    loaded, cfg = _stage_setup(params, "reference", mlflow)
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

    loaded, cfg = _stage_setup(params, "train_mapper", mlflow)
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

    loaded, cfg = _stage_setup(params, "eval_generation", mlflow)
    everything = load_params(params)
    sampler, visual = configs.section_config(everything, "sampler"), configs.section_config(everything, "visual_features")
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
    loaded = _params(params, required=False)
    cfg = configs.train_graph_config(loaded | {"profile": "quality"}) if loaded is not None else configs.TrainGraphConfig(profile="quality")
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
