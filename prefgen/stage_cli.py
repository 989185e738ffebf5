"""One `prefgen` command per pipeline stage, made from the table of stages (prefgen/stage_table.py).

With no path option a command is the DVC stage: its config and every path come from params.yaml, its
metrics go to the catalogue's metrics file and an MLflow run is logged. With any path option it is a
standalone run on those paths: it must name every path the stage writes (so it never overwrites the
pipeline's outputs), and all or none of the paths it reads; a params file is needed only for the
paths not given; metrics go only where --metrics says; an MLflow run is logged only with --mlflow,
tagged standalone, so neither DVC's metrics nor lineage can take it for the pipeline's.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from prefgen.params import DEFAULT_PARAMS, ConfigError, load_params, resolve_profile
from prefgen.paths import Paths
from prefgen.registry.cli import fail
from prefgen.stage_table import STAGES, Stage
from prefgen.tracking_config import TrackingConfig


def print_result(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")


def read_params(path: Path, required: bool) -> dict[str, Any] | None:
    """params.yaml, or None where it is absent and not required; a bad file is one `error:` line."""
    if not path.is_file():
        if required:
            fail(f"params file not found: {path} (run from the project root or pass --params)")
        return None
    try:
        return load_params(path)
    except ConfigError as err:
        fail(str(err))
    return None


def _check_standalone(stage: Stage, given: dict[str, Path]) -> None:
    """A run on explicit paths names every path it writes, and all or none of those it reads."""
    missing_writes = [key for key in stage.writes if key not in given]
    if missing_writes:
        fail(f"a `{' '.join(stage.command)}` run on explicit paths writes only where told: give "
             f"{', '.join('--' + key.replace('_', '-') for key in missing_writes)} too")
    read = [key for key in stage.reads if key in given]
    if read and len(read) < len(stage.reads):
        absent = [key for key in stage.reads if key not in given]
        fail(f"--{read[0].replace('_', '-')} needs {', '.join('--' + key.replace('_', '-') for key in absent)}: the "
             "pipeline's other inputs belong to the pipeline's data, not to the paths given")


def _tracking(loaded: dict[str, Any] | None, mlflow: bool | None, standalone: bool, params: Path) -> TrackingConfig | None:
    """The tracking config of this run, or None for no MLflow run."""
    if standalone and not mlflow:
        return None
    if loaded is None:
        if mlflow:
            fail(f"--mlflow needs a params file for the tracking section: {params} not found")
        return None
    from prefgen.config import section_config  # the registry of sections: only entry points read whole params files

    cfg = section_config(loaded, "tracking")
    if mlflow is None:
        return cfg
    return replace(cfg, enabled=mlflow, **({"standalone": True} if standalone else {}))


def _logged_params(stage: Stage, loaded: dict[str, Any] | None, paths: Paths) -> dict[str, Any]:
    """What the MLflow run records: the stage's own section at top level, any other section under its name, its paths."""
    if loaded is None:
        return {}
    own, *others = stage.sections
    logged = dict(resolve_profile(loaded, own) or {})
    logged |= {name: resolve_profile(loaded, name) or {} for name in others}
    return logged | {"paths": {key: str(getattr(paths, key)) for key in (*stage.reads, *stage.writes)}}


def run_stage(stage: Stage, given: dict[str, Path | None], params: Path, mlflow: bool | None, metrics: Path | None,
              progress: bool) -> None:
    """Run one stage from the command line: config and paths from params.yaml and the options, then the runner."""
    from prefgen.stages.runner import execute

    explicit = {key: path for key, path in given.items() if path is not None}
    standalone = bool(explicit)
    if standalone:
        _check_standalone(stage, explicit)
    loaded = read_params(params, required=len(explicit) < len(stage.reads) + len(stage.writes))
    if not progress:
        os.environ["TQDM_DISABLE"] = "1"
    module = importlib.import_module(f"prefgen.stages.{stage.name}")
    cfg = module.load_config(loaded)
    paths = Paths.from_params(loaded, explicit, needed=(*stage.reads, *stage.writes))
    metrics_file = metrics if standalone else metrics or paths.metrics_file(stage.name)
    log = (lambda line: typer.echo(line, err=True)) if progress else (lambda line: None)
    try:
        result = execute(stage.name, lambda: module.run(cfg, paths, log), paths, Path.cwd(), metrics_file,
                         _tracking(loaded, mlflow, standalone, params), _logged_params(stage, loaded, paths), stage.not_metrics)
    except getattr(module, "USER_ERRORS", ()) as err:
        fail(str(err))
    if result:  # a distributed run's ranks other than 0 return nothing
        print_result(result)


def _path_option(stage: Stage, key: str) -> inspect.Parameter:
    role = "read" if key in stage.reads else "written"
    option = typer.Option(f"--{key.replace('_', '-')}", help=f"paths.{key}, {role} by this stage (default: params.yaml's; "
                          "giving any path makes this a standalone run).")
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Path | None, option])


_COMMON = (
    inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_PARAMS,
                      annotation=Annotated[Path, typer.Option(help="params.yaml: the stage's sections and the catalogue of paths.")]),
    inspect.Parameter("mlflow", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[bool | None, typer.Option("--mlflow/--no-mlflow", help="Log an MLflow run (default: as the "
                                                                     "pipeline's stage; with explicit paths only when asked, tagged standalone).")]),
    inspect.Parameter("metrics", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Path | None, typer.Option(help="Write the metrics here (default: the catalogue's "
                                                                     "metrics file; none with explicit paths).")]),
    inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=True,
                      annotation=Annotated[bool, typer.Option("--progress/--no-progress", help="Progress on stderr.")]),
)


def stage_command(stage: Stage):
    """A Typer command function for `stage`, its options made from the stage's catalogue keys."""
    keys = (*stage.reads, *stage.writes)

    def command(**options: Any) -> None:
        run_stage(stage, {key: options[key] for key in keys}, options["params"], options["mlflow"], options["metrics"],
                  options["progress"])

    parameters = [_path_option(stage, key) for key in keys] + list(_COMMON)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__name__ = stage.name
    command.__doc__ = stage.help
    return command


def add_stage_commands(app: typer.Typer, eval_app: typer.Typer) -> None:
    """One command per stage: `prefgen <command>`, or `prefgen eval <what>` for the evaluation stages; a stage whose
    command the CLI already defines by hand (one that also runs standalone on other inputs) keeps that one."""
    for stage in STAGES:
        group = eval_app if stage.command[0] == "eval" else app
        if stage.command[-1] not in {command.name for command in group.registered_commands}:
            group.command(stage.command[-1], help=stage.help)(stage_command(stage))
