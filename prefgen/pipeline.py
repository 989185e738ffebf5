"""The DVC pipeline as seen by the flows: stage order, status, repro, lock digests.

DVC owns what is built from what; flows call these helpers to run one stage at
a time in DAG order (DVC holds a repo lock, so stages never run concurrently)
and to read back the digests DVC recorded, which become MLflow lineage tags.
"""

from __future__ import annotations

import graphlib
import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from prefgen.tracking import FLOW_RUN_ENV


class StageError(RuntimeError):
    """A DVC command failed; the message carries the tail of its output.
    `transient`: the failure may not repeat (DVC's lock held, the stage killed by a signal), so a retry can help."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# What DVC prints when another DVC process holds the repo, or when the stage was killed (the OOM killer, a
# preemption): only these can pass on a retry; a stage's own error would repeat, so retrying it only costs time.
_TRANSIENT = ("Unable to acquire lock", "exited with -9", "exited with 137", "exited with -15", "exited with 143")
_TAIL_LINES = 60  # lines of a failed command's output kept for its StageError


def _stages(root: Path) -> dict[str, dict[str, Any]]:
    path = root / "dvc.yaml"
    if not path.is_file():
        raise StageError(f"no dvc.yaml in {root}")
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})


def _paths(entries: list[Any]) -> list[str]:
    """Paths from a deps/outs list whose entries are strings or {path: options}."""
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]


def _interpolate(path: str, params: dict[str, Any]) -> str:
    """Resolve DVC's `${section.key}` templating against params.yaml."""
    while "${" in path:
        start = path.index("${")
        end = path.index("}", start)
        value: Any = params
        for key in path[start + 2 : end].split("."):
            value = value[key]
        path = path[:start] + str(value) + path[end + 1 :]
    return path


def _params(root: Path) -> dict[str, Any]:
    """params.yaml as DVC templates `${...}` against it ({} when there is none)."""
    path = root / "params.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def _inside(dep: str, out: str) -> bool:
    dep_p, out_p = PurePosixPath(dep), PurePosixPath(out)
    return dep_p == out_p or out_p in dep_p.parents or dep_p in out_p.parents


def upstream(root: Path) -> dict[str, set[str]]:
    """{stage: the stages whose outputs it reads} for every stage of dvc.yaml."""
    stages = _stages(root)
    params = _params(root)
    outs = {name: [_interpolate(p, params) for p in _paths(s.get("outs", []) + s.get("metrics", []) + s.get("plots", []))]
            for name, s in stages.items()}
    found = {}
    for name, stage in stages.items():
        deps = [_interpolate(p, params) for p in _paths(stage.get("deps", []))]
        found[name] = {other for other, paths in outs.items() if other != name and any(_inside(d, o) for d in deps for o in paths)}
    return found


def stage_order(root: Path) -> list[str]:
    """Stage names of dvc.yaml in an order where every stage follows those it depends on."""
    graph = graphlib.TopologicalSorter()
    for name, before in upstream(root).items():
        graph.add(name, *sorted(before))
    return list(graph.static_order())


def producers(root: Path) -> dict[str, str]:
    """{output path (as params resolve it): the stage that writes it} for every out, metric and plot of dvc.yaml."""
    params = _params(root)
    return {_interpolate(path, params): name for name, stage in _stages(root).items()
            for path in _paths(stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []))}


def read_lock(root: Path) -> dict[str, Any]:
    """dvc.lock's stages as written by DVC ({} before the first repro)."""
    path = root / "dvc.lock"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {}) if path.is_file() else {}


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    # Stage commands say `python`: make it this interpreter (the project's virtualenv)
    # even when the caller did not activate it, e.g. `.venv/bin/python -m flows.retrain`.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    # Unbuffered: a Python stage writing to a pipe would otherwise hold its lines back until it ends.
    return {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1", **(extra or {})}


def _failed(args: tuple[str, ...], code: int, tail: str) -> StageError:
    return StageError(f"`dvc {' '.join(args)}` failed (exit {code}):\n{tail}",
                      transient=code < 0 or any(marker in tail for marker in _TRANSIENT))


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                          env=_env(None), check=False)
    if done.returncode != 0:
        raise _failed(args, done.returncode, (done.stdout + done.stderr).strip()[-3000:])
    return done.stdout


def _dvc_streamed(root: Path, args: tuple[str, ...], on_line: Callable[[str], None], env: dict[str, str] | None) -> None:
    """Run DVC, handing each line of its output (and its stage's) to `on_line` as soon as it is written."""
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    with subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=root, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=_env(env)) as process:
        for raw in process.stdout:
            # A progress bar redraws its line with carriage returns: keep what a terminal would show last.
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n").split("\r")[-1].strip()
            if line:
                tail.append(line)
                on_line(line)
    if process.returncode != 0:
        raise _failed(args, process.returncode, "\n".join(tail))


def is_changed(root: Path, stage: str) -> bool:
    """True when DVC would re-run `stage` (its deps, params, outs or command changed)."""
    status = json.loads(_dvc(root, "status", "--json", stage) or "{}")
    return bool(status)


def stale_stages(root: Path) -> list[str]:
    """Stages DVC would re-run now (any changed dep, param, out or command), by name."""
    status = json.loads(_dvc(root, "status", "--json") or "{}")
    return sorted(name.split(":")[-1] for name in status)


# DVC's closing hints (git add, autostage, push) say nothing about the stage.
_DVC_HINTS = ("To track the changes", "git add", "auto staging", "autostage", "dvc push", "dvc config")


def repro(root: Path, stage: str, flow_run_id: str | None = None, on_line: Callable[[str], None] | None = None) -> list[str]:
    """Run exactly one stage with `dvc repro --single-item`; returns the output lines worth logging.
    `on_line` gets each of those lines while the stage runs (a flow logs them as they come)."""
    env = {FLOW_RUN_ENV: flow_run_id} if flow_run_id else None
    kept: list[str] = []

    def keep(line: str) -> None:
        if not any(hint in line for hint in _DVC_HINTS):
            kept.append(line)
            if on_line is not None:
                on_line(line)

    _dvc_streamed(root, ("repro", "--single-item", stage), keep, env)
    return kept


def lock_entry(root: Path, stage: str) -> dict[str, Any]:
    """The stage's digests from dvc.lock: {"deps": {path: md5}, "outs": {path: md5}, "params": {...}}."""
    stages = read_lock(root)
    if not stages:
        return {}
    entry = stages.get(stage, {})
    digests = {kind: {d["path"]: d.get("md5") or d.get("hash") for d in entry.get(kind, [])} for kind in ("deps", "outs")}
    return digests | {"params": entry.get("params", {})}


def outputs_summary(root: Path) -> list[str]:
    """Lines telling a user where each stage's outputs and metrics are."""
    params = _params(root)
    lines = []
    for name, stage in _stages(root).items():
        for kind in ("outs", "metrics", "plots"):
            for path in _paths(stage.get(kind, [])):
                resolved = _interpolate(path, params)
                where = root / resolved
                lines.append(f"  {name:<15} {kind:<8} {where}{'' if where.exists() else '  (missing)'}")
                if kind == "metrics" and where.suffix == ".json" and where.is_file():
                    numbers = json.loads(where.read_text(encoding="utf-8"))
                    top = [f"{k}={v:,}" for k, v in numbers.items() if isinstance(v, int | float) and not isinstance(v, bool)]
                    lines.append(f"  {'':<15} {'':<8} {' '.join(top)}")
    return lines
