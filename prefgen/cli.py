"""The `prefgen` command: one sub-command per stage (made from the table of stages), plus maintenance commands.

Every stage runs as the DVC stage reading params.yaml, or standalone on explicit paths
(`prefgen ingest --raw DIR --tables DIR`; prefgen/stage_cli.py says what that changes). Results go
to stdout as one JSON object on the last line; progress and messages go to stderr; every error is
one `error:` line, exit 2.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from prefgen import config as configs
from prefgen.data.config import ForgetConfig
from prefgen.params import DEFAULT_PARAMS, ConfigError
from prefgen.paths import Paths
from prefgen.preference.config import TrainGraphConfig
from prefgen.pipeline_folder import cli as folder_cli
from prefgen.registry import cli as registry_cli
from prefgen.registry.cli import fail as _fail
from prefgen.stage_cli import add_stage_commands, print_result as _print_result, read_params as _params, run_stage
from prefgen.stage_table import BY_NAME


class _Commands(TyperGroup):
    """Every command's ConfigError (params.yaml, a campaign file), wherever raised, ends as `fail`'s one line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as err:
            _fail(str(err))


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, help="prefgen: images that fit a social audience.")


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
    folder = tables or Paths.from_params(loaded).tables
    policy = configs.section_config(loaded, "forget") if loaded else ForgetConfig()
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


_PIPELINE_PATH = "paths.{key}, {role} by the stage (default: params.yaml's; giving any makes this a standalone run of the stage)."


@app.command("prepare-images")
def prepare_images(
    images: Annotated[Path | None, typer.Option(help="On a catalogue: the folder its paths are relative to.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="On a catalogue: images*.jsonl(.gz) rows or ingest's "
                                                 "images.parquet.")] = None,
    out: Annotated[Path | None, typer.Option(help="On a catalogue: output folder, prepared PNGs under images/ and "
                                             "manifest.parquet.")] = None,
    size: Annotated[int | None, typer.Option(min=1, help="On a catalogue: side of the square images, in pixels.")] = None,
    max_pixels: Annotated[int | None, typer.Option(min=1, help="On a catalogue: images whose header declares more pixels "
                                                   "are rejected undecoded (default: 64 million).")] = None,
    tables: Annotated[Path | None, typer.Option(help=_PIPELINE_PATH.format(key="tables", role="read"))] = None,
    photos: Annotated[Path | None, typer.Option(help=_PIPELINE_PATH.format(key="photos", role="read"))] = None,
    prepared: Annotated[Path | None, typer.Option(help=_PIPELINE_PATH.format(key="prepared", role="written"))] = None,
    params: Annotated[Path, typer.Option(help="params.yaml: the prepare_images section, image_size and the catalogue of "
                                         "paths.")] = DEFAULT_PARAMS,
    mlflow: Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help="Log an MLflow run (default: as the pipeline's "
                                                "stage).")] = None,
    metrics: Annotated[Path | None, typer.Option(help="Write the metrics here (default: the catalogue's metrics file).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress on stderr.")] = True,
) -> None:
    """Every image the tables name as a square RGB PNG at the models' size (incremental); the rest rejected with a reason.

    With none of --images, --catalog, --out, --size it is the pipeline's stage `prepare_images` (the tables' images
    under paths.photos, into paths.prepared); with all four it prepares that catalogue alone, without params.yaml."""
    on_catalog = {"--images": images, "--catalog": catalog, "--out": out, "--size": size, "--max-pixels": max_pixels}
    if all(value is None for value in on_catalog.values()):
        run_stage(BY_NAME["prepare_images"], {"tables": tables, "photos": photos, "prepared": prepared}, params, mlflow, metrics, progress)
        return
    if any(value is not None for value in (tables, photos, prepared)):
        _fail("give either the stage's paths (--tables, --photos, --prepared) or a catalogue (--images, --catalog, --out, --size)")
    missing = [name for name, value in on_catalog.items() if value is None and name != "--max-pixels"]
    if missing:
        _fail(f"a prepare-images run on a catalogue needs {', '.join(missing)} too")
    _prepare_catalog(images, catalog, out, size, max_pixels)


def _prepare_catalog(images: Path, catalog: Path, out: Path, size: int, max_pixels: int | None) -> None:
    from prefgen.vision.prepare import DEFAULT_MAX_PIXELS, prepare_images as prepare

    try:
        counts = prepare(images, catalog, out, size, max_pixels or DEFAULT_MAX_PIXELS, log=lambda line: typer.echo(line, err=True))
    except (OSError, ValueError) as err:  # a missing folder or catalogue, an unreadable catalogue, an unwritable --out
        _fail(str(err))
    _print_result(counts)


eval_app = typer.Typer(no_args_is_help=True, help="Evaluation against the synthetic world's ground truth.")
app.add_typer(eval_app, name="eval")
add_stage_commands(app, eval_app)  # synth, ingest, ..., eval generation: one per dvc.yaml stage (prefgen/stage_cli.py)


@eval_app.command("mapper-ablations")
def eval_mapper_ablations(
    params: Annotated[Path, typer.Option(help="params.yaml: the train_mapper section and the catalogue of paths.")] = DEFAULT_PARAMS,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the ablation rows here.")] = None,
) -> None:
    """A study, not a stage: retrain the mapper per visual part and without the adversarial terms; print the table."""
    from prefgen.eval import mapper
    from prefgen.stages import eval_mapper

    loaded = _params(params, required=True)
    rows = mapper.ablations(eval_mapper.load_config(loaded), Paths.from_params(loaded), log=lambda line: typer.echo(line, err=True))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=2) + "\n")
    _print_result({"rows": rows})


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
    params: Annotated[Path, typer.Option(help="params.yaml: the train_graph section (its quality profile).")] = DEFAULT_PARAMS,
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
    cfg = configs.section_config(loaded | {"profile": "quality"}, "train_graph") if loaded is not None else TrainGraphConfig(profile="quality")
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
folder_cli.add_commands(app)  # new, retrain, nightly: a pipeline folder of one's own (prefgen/pipeline_folder/cli.py)

if __name__ == "__main__":
    app()
