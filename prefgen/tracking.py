"""MLflow tracking: where runs go, the lineage tags every run carries, model artefacts.

Every stage logs one MLflow run with its params, metrics and lineage tags:

    prefgen.stage          the DVC stage name (a standalone run on explicit paths has prefgen.standalone instead)
    git.commit, git.dirty  the code that ran
    prefect.flow_run_id    the orchestrating Prefect flow run (when run by a flow)
    dvc.lock.deps/outs     the stage's dvc.lock digests (added by the flow once DVC wrote them)

Default tracking is a local SQLite store with local artefacts beside the repo, so
nothing needs a server; MLFLOW_TRACKING_URI overrides it (e.g. a real `mlflow server`).

Models travel as plain artefacts: `model.safetensors` + `config.json` in one
artefact folder, written by `log_model_artifacts` and read back by
`load_model_artifacts` without unpickling anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from prefgen.tracking_config import TrackingConfig

FLOW_RUN_ENV = "PREFGEN_FLOW_RUN_ID"  # set by flows/ for the stage subprocesses they start
STANDALONE_TAG = "prefgen.standalone"  # the stage a standalone run (explicit paths, --mlflow) ran, in place of prefgen.stage


def tracking_uri(cfg: TrackingConfig, root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else the config's default with relative paths made absolute."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    prefix = "sqlite:///"
    if cfg.default_uri.startswith(prefix) and not cfg.default_uri.startswith(prefix + "/"):
        return prefix + str((root / cfg.default_uri[len(prefix) :]).resolve())
    return cfg.default_uri


def configure(cfg: TrackingConfig, root: Path) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    uri = tracking_uri(cfg, root)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        mlflow.set_experiment(cfg.experiment)
        return experiment.experiment_id
    # A local store keeps artefacts in a folder beside the repo; a server picks its own.
    local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
    location = (root / cfg.artifact_dir).resolve().as_uri() if local else None
    experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
    return {"git.commit": commit, "git.dirty": dirty if commit != "unknown" else "unknown"}


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numeric metrics -> {"a.b": value}; non-numbers are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}".replace("@", "_at_")  # MLflow refuses '@' in names (HR@10 -> HR_at_10)
        if isinstance(value, Mapping):
            flat |= flatten(value, name + ".")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


@contextmanager
def stage_run(stage: str, params: Mapping[str, Any], cfg: TrackingConfig, root: Path,
              flow_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage execution, tagged with its lineage (the flow run: given, or from the environment).

    A standalone run (cfg.standalone: a stage command on explicit paths) is tagged `prefgen.standalone` instead of
    `prefgen.stage` and with no flow run, so no lineage query for the pipeline's stage can find it."""
    configure(cfg, root)
    if cfg.standalone:
        tags, run_name = {STANDALONE_TAG: stage, **git_state(root)}, f"{stage} (standalone)"
    else:
        tags, run_name = {"prefgen.stage": stage, **git_state(root)}, stage
        flow_run_id = flow_run_id or os.environ.get(FLOW_RUN_ENV)
        if flow_run_id:
            tags["prefect.flow_run_id"] = flow_run_id
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params(flatten_params(params))
        yield run


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat |= flatten_params(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def log_model_artifacts(name: str, tensors: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """Log `tensors` (name -> torch.Tensor) and `config` under artefact folder `name`.

    Returns the artefact URI, loadable with `load_model_artifacts`. Every later
    step logs its models this way, so the registry can bundle them uniformly.
    """
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        mlflow.log_artifacts(str(folder), artifact_path=name)
    return f"{mlflow.get_artifact_uri()}/{name}"


def load_model_artifacts(uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, config) from an artefact folder written by `log_model_artifacts`."""
    from safetensors.torch import load_file

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return load_file(folder / "model.safetensors"), config


def lock_digest(lock: Mapping[str, Any]) -> str:
    """The digest a stage's dvc.lock entry (pipeline.lock_entry) is tagged with: finds its run again later."""
    return hashlib.sha256(json.dumps(lock, sort_keys=True).encode()).hexdigest()


def tag_with_lock(cfg: TrackingConfig, root: Path, stage: str, flow_run_id: str, lock: Mapping[str, Any]) -> list[str]:
    """Add the stage's dvc.lock digests to the run(s) it logged in this flow run.

    DVC writes dvc.lock only after the stage's command exits, so the stage cannot
    tag itself; the flow does it right after `dvc repro`. Returns the run ids tagged.
    """
    configure(cfg, root)
    query = f"tags.`prefgen.stage` = '{stage}' AND tags.`prefect.flow_run_id` = '{flow_run_id}'"
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=query, output_format="list")
    client = mlflow.MlflowClient()
    digest = lock_digest(lock)
    for run in runs:
        run_id = run.info.run_id
        client.set_tag(run_id, "dvc.lock.sha256", digest)
        for kind in ("deps", "outs"):
            client.set_tag(run_id, f"dvc.lock.{kind}", json.dumps(lock.get(kind, {}), sort_keys=True)[:5000])
        client.log_dict(run_id, dict(lock), "lineage/dvc.lock.json")
    return [r.info.run_id for r in runs]


def world_tags(raw: Path) -> dict[str, str]:
    """The synthetic world a run computed on (name + content hash), read from the raw logs' WORLD file; none for other logs."""
    marker = raw / "WORLD"
    if not marker.is_file():
        return {}
    name, sha = marker.read_text(encoding="utf-8").split()
    return {"world": name, "world.sha256": sha}
