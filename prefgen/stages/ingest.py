"""DVC stage `ingest`: params.yaml [ingest] -> data/02_tables, metrics, an MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow

from prefgen import tracking
from prefgen.config import IngestConfig, tracking_config
from prefgen.data import ingest
from prefgen.stages.common import write_json_atomic

# Lists and ids are useful in the JSON printed to the user but are not metrics.
_NOT_METRICS = ("batch", "ignored_files", "unreadable_files")


def metrics_view(counts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in counts.items() if k not in _NOT_METRICS}


def run(cfg: IngestConfig, raw_dir: Path, out_dir: Path, params: dict[str, Any] | None,
        metrics_path: Path | None, root: Path, progress: bool = True) -> dict[str, Any]:
    """Ingest, write the metrics file, and log an MLflow run when `params` are given."""
    if params is None:
        counts = ingest.run(cfg, raw_dir, out_dir, progress=progress)
    else:
        with tracking.stage_run("ingest", params.get("ingest", {}), tracking_config(params), root):
            counts = ingest.run(cfg, raw_dir, out_dir, progress=progress)
            mlflow.log_metrics(tracking.flatten(metrics_view(counts)))
            mlflow.log_dict(counts, "ingest_counts.json")
    if metrics_path is not None:
        write_json_atomic(metrics_path, metrics_view(counts))
    return counts
