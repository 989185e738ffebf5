"""Which of the project's stages a pipeline folder runs, and its dvc.yaml, derived from the project's.

A platform has no synthetic world: `synth` goes, and so does every stage that needs the world's truth (one that
reads it only where it exists stays, without that dependency); then every stage whose outputs only dropped stages
read (the oracle). Nothing is hand-listed, so a stage the project adds is
in or out by the same rule.
"""

from __future__ import annotations

from typing import Any

from prefgen.config import ENTRY_POINT_SECTIONS
from prefgen.params import CODE_KEY
from prefgen.registry.bundle import PARTS
from prefgen.stage_table import BY_NAME, Stage

WORLD_STAGES = ("synth",)  # makes the synthetic world: a platform brings its own logs
TRUTH_KEY = "truth"  # the catalogue key of a synthetic world's ground truth
SHARED_KEYS = ("checkpoints", "plots")  # folders many stages write into; no stage reads another's
CODE_DEP_PREFIX = "prefgen/"  # the project's code deps in dvc.yaml; a folder lists its code fingerprint instead


class FolderError(RuntimeError):
    """A pipeline folder cannot be made or run as asked; the message says why and what to do."""


def _readers(key: str, stages: list[Stage]) -> list[str]:
    """The stages that read catalogue key `key`, and the registry where the bundle holds it."""
    return [stage.name for stage in stages if key in stage.reads] + (["registry"] if key in PARTS else [])


def kept_stages(names: list[str]) -> list[str]:
    """The stages of `names` (dvc.yaml's, in its order) that a pipeline folder runs."""
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise FolderError(f"dvc.yaml's stage {unknown[0]!r} is not in prefgen/stage_table.py: the two must list the same stages")
    everything = [BY_NAME[name] for name in names]
    kept = [stage for stage in everything if stage.name not in WORLD_STAGES and not _needs_truth(stage)]
    while True:
        unread = [stage for stage in kept if _only_dropped_read(stage, kept, everything)]
        if not unread:
            return [stage.name for stage in kept]
        kept = [stage for stage in kept if stage not in unread]


def _needs_truth(stage: Stage) -> bool:
    return TRUTH_KEY in stage.reads and TRUTH_KEY not in stage.optional


def _only_dropped_read(stage: Stage, kept: list[Stage], everything: list[Stage]) -> bool:
    """Whether some stage reads what `stage` writes, but none that is kept (nor the registry)."""
    outputs = [key for key in stage.writes if key not in SHARED_KEYS]
    readers = {reader for key in outputs for reader in _readers(key, everything)} - {stage.name}
    kept_names = {other.name for other in kept} | {"registry"}
    return bool(readers) and not readers & kept_names


def dropped_sections(names: list[str], kept: list[str]) -> list[str]:
    """params.yaml sections that only dropped stages read (and no flow nor the registry)."""
    needed = {section for name in kept for section in BY_NAME[name].sections} | set(ENTRY_POINT_SECTIONS)
    return sorted({section for name in names if name not in kept for section in BY_NAME[name].sections} - needed)


def folder_stage(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """One project stage as a folder runs it: no code deps (those files are the installed prefgen's, not the
    folder's), its code fingerprint among its params instead."""
    truth = f"${{paths.{TRUTH_KEY}}}"  # a kept stage reads the truth only where it exists, and a folder has none
    deps = [dep for dep in spec.get("deps") or []
            if not (isinstance(dep, str) and (dep.startswith(CODE_DEP_PREFIX) or dep == truth))]
    out = {key: value for key, value in spec.items() if key not in ("deps", "params")}
    return {"cmd": out.pop("cmd"), **({"deps": deps} if deps else {}),
            "params": [*(spec.get("params") or []), f"{CODE_KEY}.{name}"], **out}


def folder_dvc(project: dict[str, Any]) -> dict[str, Any]:
    """The folder's dvc.yaml (parsed) from the project's (parsed): its kept stages, in the project's order."""
    stages = project.get("stages") or {}
    return {"stages": {name: folder_stage(stages[name], name) for name in kept_stages(list(stages))}}
