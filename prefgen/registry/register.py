"""`prefgen register`: bundle what the pipeline trained, register it, and let the champion gate decide.

The retrain flow runs this after the last DVC stage (it is a registry side effect, not
a file DVC could cache). Nothing is registered when the bundle's digest is already a
version: a retrain that changed nothing adds no version and no MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from prefgen import pipeline, tracking
from prefgen.config import section_config, tracking_config
from prefgen.data.ingest import discover
from prefgen.generation.data import featured_split_ids, mapped_embeddings
from prefgen.hashing import sha256_file
from prefgen.paths import Paths
from prefgen.registry import store
from prefgen.registry.bundle import PARTS, Bundle, assemble
from prefgen.registry.config import RegistryConfig
from prefgen.registry.gate import read_gate_metrics
from prefgen.registry.generate import load_version
from prefgen.registry.store import RegistryError

# (params, root, bundle, metric names, log) -> {metric: value} of the bundle judged on this pipeline's evaluation set.
Rescore = Callable[[dict[str, Any], Path, Bundle, list[str], Callable[[str], None]], dict[str, float]]
EVAL_STAGES = ("eval_graph", "eval_holdout", "eval_mapper", "eval_generation")
PROBE_TIMEOUT_S = 5  # MLflow's client retries an unreachable server for minutes before it gives up
# While registering, MLflow's client gives up on a lost server within seconds (unless the environment sets these).
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def unreachable(uri: str) -> str:
    """Why the tracking server at `uri` does not answer ("" when it does, or when `uri` is no server)."""
    if not uri.startswith(("http://", "https://")):
        return ""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return ""  # it answered: a server without /health is still a server
    except (OSError, ValueError) as err:
        return str(getattr(err, "reason", err))
    return ""


@contextmanager
def _fail_fast(uri: str) -> Iterator[None]:
    """A tracking server lost mid-way fails the registration within seconds, with an error that says what to do."""
    added = {key: value for key, value in FAIL_FAST.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    except MlflowException as err:
        reason = unreachable(uri)
        if reason:
            raise RegistryError(f"the MLflow tracking server {uri} stopped answering while registering ({reason}): run "
                                "register again once it answers; a version registered but not judged is judged then") from err
        raise
    finally:
        for key in added:
            os.environ.pop(key, None)


def eval_set_digest(cfg: RegistryConfig, params: dict[str, Any], paths: Paths, root: Path) -> str:
    """sha256 over the evaluation files' contents (named relative to `root` where they lie under it) and the
    evaluation protocol of every stage the gate reads that has its own params section (prompts, pairs, segments,
    negatives, seeds: e.g. the resolved `eval_generation` config without its thread count)."""
    digest = hashlib.sha256()
    for entry in cfg.eval_set:
        path = root / getattr(paths, entry)
        if not path.exists():
            raise FileNotFoundError(f"params.registry.eval_set names {entry} ({path}), which does not exist (run the pipeline first)")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            name = file.relative_to(root) if file.is_relative_to(root) else file
            digest.update(f"{name.as_posix()}\0{sha256_file(file)}\n".encode())
    for stage in sorted({name.split(".", 1)[0] for name in cfg.judged_metrics()}):
        if stage in params:  # eval_mapper has no section of its own (it reads train_mapper's): no protocol to pin
            protocol = asdict(section_config(params, stage))  # resolved: defaults count as written
            judged = {k: v for k, v in protocol.items() if k != "threads"}  # how it ran, not what it judged
            digest.update(json.dumps(judged, sort_keys=True).encode())
    return digest.hexdigest()


def _stage_run(client: mlflow.MlflowClient, stage: str, lock: dict[str, Any]) -> dict[str, str]:
    """The MLflow run that made the stage's current outputs: matched by its dvc.lock digest tag (runs of the
    retrain flow), else the stage's latest finished run (a plain `dvc repro` leaves no lock tag)."""
    base = f"tags.`prefgen.stage` = '{stage}' AND attributes.status = 'FINISHED'"
    exact = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1,
                               filter_string=f"{base} AND tags.`dvc.lock.sha256` = '{tracking.lock_digest(lock)}'")
    if exact:
        return {"stage": stage, "run_id": exact[0].info.run_id, "matched_by": "dvc.lock digest"}
    latest = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1, filter_string=base,
                                order_by=["attributes.start_time DESC"])
    if latest:
        return {"stage": stage, "run_id": latest[0].info.run_id, "matched_by": "latest finished run of the stage"}
    return {"stage": stage, "run_id": "", "matched_by": "no MLflow run found"}


def collect_lineage(params: dict[str, Any], root: Path, flow_run_id: str = "") -> dict[str, Any]:
    """Where this bundle comes from: code, dvc.lock, the training and evaluation runs, the raw log files."""
    made_by = pipeline.producers(root)
    catalogue = Paths.from_params(params)  # as params.yaml writes them, the way dvc.yaml's outs name them
    client = mlflow.MlflowClient()
    training = {}
    for part in PARTS:
        folder = str(getattr(catalogue, part))
        stage = made_by.get(folder, "")
        training[part] = {"path": folder} | (_stage_run(client, stage, pipeline.lock_entry(root, stage)) if stage else
                                             {"stage": "", "run_id": "", "matched_by": "not a dvc.yaml output"})
    evaluation = {stage: _stage_run(client, stage, pipeline.lock_entry(root, stage)) for stage in EVAL_STAGES}
    raw_dir = root / catalogue.raw
    raw = [{"source": f.source, "sha256": f.sha256, "bytes": f.nbytes, "kind": f.kind} for f in discover(raw_dir)[0]] \
        if raw_dir.is_dir() else []
    return {"created_at": datetime.now(UTC).isoformat(timespec="seconds"), "git": tracking.git_state(root),
            "prefect.flow_run_id": flow_run_id, "profile": params.get("profile", ""),
            "training_runs": training, "evaluation_runs": evaluation, "dvc_lock": pipeline.read_lock(root),
            "raw_logs": {"dir": str(catalogue.raw), "files": raw}}


def inputs_digest(cfg: RegistryConfig, params: dict[str, Any], root: Path) -> str:
    """sha256 of everything a bundle is built from: dvc.lock (every model folder's and the catalogue's inputs by
    content hash) and the settings it copies. Equal inputs make an equal bundle, so no need to assemble it again."""
    settings = {name: asdict(section_config(params, name)) for name in ("registry", "visual_features", "sampler")}
    return hashlib.sha256(json.dumps({"dvc_lock": pipeline.read_lock(root), "settings": settings}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def run(cfg: RegistryConfig, params: dict[str, Any], root: Path, log=print, flow_run_id: str = "",
        checked_fresh: bool = False, rescore: Rescore | None = None) -> dict[str, Any]:
    """Assemble the bundle, register it (unless its digest is already a version) and apply the champion gate.
    `flow_run_id`: the Prefect flow run doing this (default: PREFGEN_FLOW_RUN_ID), recorded in the lineage.
    `checked_fresh`: the caller has just brought every stage up to date, so `dvc status` is not asked again.
    `rescore`: judges a bundle on this pipeline's evaluation set (prefgen/rescore.py, which runs stages, so the
    entry points pass it in); without it a champion judged on another set is not compared."""
    flow_run_id = flow_run_id or os.environ.get(tracking.FLOW_RUN_ENV, "")
    stale = [] if checked_fresh else pipeline.stale_stages(root)
    if stale:
        raise RegistryError(f"the pipeline is not up to date (stale: {stale}): a bundle would mix models or metrics of "
                            "different runs; run the retrain flow (python -m flows.retrain) or dvc repro first")
    uri = tracking.tracking_uri(tracking_config(params), root)
    reason = unreachable(uri)
    if reason:
        raise RegistryError(f"the MLflow tracking server {uri} does not answer ({reason}): nothing was registered; start "
                            "it, or point MLFLOW_TRACKING_URI (or params.tracking) at one that runs")
    with _fail_fast(uri):
        return _register(cfg, params, root, log, flow_run_id, rescore)


def _register(cfg: RegistryConfig, params: dict[str, Any], root: Path, log, flow_run_id: str,
              rescore: Rescore | None) -> dict[str, Any]:
    tracking.configure(tracking_config(params), root)
    client = mlflow.MlflowClient()
    inputs = inputs_digest(cfg, params, root)
    same = store.find_by_digest(client, cfg.model_name, inputs, tag=store.INPUTS_TAG)
    if same is not None:
        log(f"nothing changed since {cfg.model_name} version {same.version} was registered (same dvc.lock and settings)")
        return _judged(client, cfg, same, log)
    paths = Paths.from_params(params).rooted(root)
    parts = {name: getattr(paths, name) for name in PARTS}
    catalogue = mapped_embeddings(paths.mapper, paths.visual, featured_split_ids(paths.split, paths.visual, "train"))
    lineage = collect_lineage(params, root, flow_run_id)
    folder = paths.bundle
    digest = assemble(parts, catalogue, section_config(params, "visual_features"), section_config(params, "sampler"), lineage, folder)
    existing = store.find_by_digest(client, cfg.model_name, digest)
    if existing is not None:
        client.set_model_version_tag(cfg.model_name, existing.version, store.INPUTS_TAG, inputs)  # next time: no assembly
        log(f"bundle {digest[:12]} is already {cfg.model_name} version {existing.version}: nothing registered")
        return _judged(client, cfg, existing, log)
    metrics, eval_set = read_gate_metrics(paths, cfg.judged_metrics()), eval_set_digest(cfg, params, paths, root)
    with tracking.stage_run("register", {"registry": asdict(cfg)}, tracking_config(params), root, flow_run_id):
        mlflow.set_tags(tracking.world_tags(paths.raw))
        mlflow.log_metrics(tracking.flatten(metrics))
        version, _ = store.register(client, cfg, folder, metrics, eval_set, lineage, inputs)
        log(f"registered bundle {digest[:12]} as {cfg.model_name} version {version.version}")
        decision = store.gate(client, cfg, version, _rescorer(client, cfg, params, root, rescore, log) if rescore else None)
    log(f"champion gate: {decision.summary()}")
    aliases = list(client.get_model_version(cfg.model_name, version.version).aliases)
    return {"version": str(version.version), "created": True, "digest": digest, "gate": "passed" if decision.passed else "refused",
            "reasons": decision.reasons, "aliases": aliases, "metrics": metrics, "eval_set_sha256": eval_set}


def _rescorer(client: mlflow.MlflowClient, cfg: RegistryConfig, params: dict[str, Any], root: Path, rescore: Rescore,
              log) -> Callable[[ModelVersion], dict[str, float] | None]:
    """The champion judged again on this pipeline's evaluation set (prefgen/rescore.py); None where that fails, so
    the gate falls back to its own figures and says they are not comparable."""

    def judged_again(champion: ModelVersion) -> dict[str, float] | None:
        log(f"champion gate: version {champion.version} was judged on another evaluation set: judging it again on this one")
        try:
            with tempfile.TemporaryDirectory(prefix="prefgen-champion-") as cache:
                loaded = load_version(client, cfg.model_name, str(champion.version), Path(cache))
                return rescore(params, root, loaded.bundle, cfg.judged_metrics(), log)
        except Exception as err:  # noqa: BLE001  a failed re-judging must not leave the new version ungated
            log(f"champion gate: judging version {champion.version} again failed ({type(err).__name__}: {err})")
            return None

    return judged_again


def _judged(client: mlflow.MlflowClient, cfg: RegistryConfig, version: ModelVersion, log) -> dict[str, Any]:
    """An already registered version, as it stands; one whose registration lost the server before the champion gate
    judged it is judged now, so no version stays half-registered."""
    found = {"version": str(version.version), "created": False, "digest": version.tags.get("bundle.digest", "")}
    if "gate.decision" in version.tags:
        return found | {"aliases": list(version.aliases)}
    log(f"{cfg.model_name} version {version.version} was registered, but its registration stopped before the champion gate")
    decision = store.gate(client, cfg, version)
    log(f"champion gate: {decision.summary()}")
    return found | {"gate": "passed" if decision.passed else "refused", "reasons": decision.reasons,
                    "aliases": list(client.get_model_version(cfg.model_name, version.version).aliases)}
