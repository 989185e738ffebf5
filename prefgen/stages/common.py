"""What every stage entry point does around its library call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow

from prefgen import tracking
from prefgen.atomic import write_json_atomic
from prefgen.config import synth_config, tracking_config
from prefgen.params import resolve_profile


def world_tags(params: dict[str, Any], root: Path) -> dict[str, str]:
    """The synthetic world a run computed on (name + content hash), read from the raw logs' WORLD file."""
    if "synth" not in params:
        return {}
    cfg = synth_config(params)
    marker = root / cfg.out_dir / cfg.world / "WORLD"
    if not marker.is_file():
        return {}
    name, sha = marker.read_text(encoding="utf-8").split()
    return {"world": name, "world.sha256": sha}


def run_stage(stage: str, params: dict[str, Any] | None, root: Path, metrics_path: Path | None,
              body: Callable[[], dict[str, Any]], not_metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run `body` inside an MLflow run for `stage` (when params are given and tracking is enabled); write its metrics file."""
    if params is None or not tracking_config(params).enabled:
        result = body()
    else:
        with tracking.stage_run(stage, resolve_profile(params, stage) or {}, tracking_config(params), root):
            result = body()
            mlflow.set_tags(world_tags(params, root))
            mlflow.log_metrics(tracking.flatten({k: v for k, v in result.items() if k not in not_metrics}))
            mlflow.log_dict(result, f"{stage}.json")
    if metrics_path is not None:
        write_json_atomic(metrics_path, {k: v for k, v in result.items() if k not in not_metrics})
    return result
