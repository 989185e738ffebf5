"""What happens around every stage's `run`: its MLflow run, its lineage tags and its metrics file."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow

from prefgen import tracking
from prefgen.atomic import write_json_atomic
from prefgen.paths import Paths
from prefgen.tracking_config import TrackingConfig


def execute(stage: str, body: Callable[[], dict[str, Any]], paths: Paths, root: Path, metrics_file: Path | None,
            tracking_cfg: TrackingConfig | None, logged_params: Mapping[str, Any], not_metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run `body` (a stage's `run` on its config and paths) inside an MLflow run for `stage` when `tracking_cfg`
    is given and enabled; write the result, less `not_metrics`, to `metrics_file` when one is given."""
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun's other ranks train beside rank 0; only rank 0 logs and writes
        return body()
    if tracking_cfg is None or not tracking_cfg.enabled:
        result = body()
        metrics = {k: v for k, v in result.items() if k not in not_metrics}
    else:
        with tracking.stage_run(stage, logged_params, tracking_cfg, root):
            result = body()
            metrics = {k: v for k, v in result.items() if k not in not_metrics}
            mlflow.set_tags(tracking.world_tags(paths.raw))
            mlflow.log_metrics(tracking.flatten(metrics))
            mlflow.log_dict(result, f"{stage}.json")
    if metrics_file is not None:
        write_json_atomic(metrics_file, metrics)
    return result
