"""DVC stage `ingest`: params.yaml [ingest] -> data/02_tables, metrics, an MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefgen.config import IngestConfig
from prefgen.data import ingest
from prefgen.stages.common import run_stage

# Lists and ids are useful in the JSON printed to the user but are not metrics.
_NOT_METRICS = ("batch", "ignored_files", "skipped_files", "unreadable_files")


def run(cfg: IngestConfig, raw_dir: Path, out_dir: Path, params: dict[str, Any] | None,
        metrics_path: Path | None, root: Path, progress: bool = True) -> dict[str, Any]:
    """Ingest, write the metrics file, and log an MLflow run when `params` are given."""
    return run_stage("ingest", params, root, metrics_path, lambda: ingest.run(cfg, raw_dir, out_dir, progress=progress),
                     not_metrics=_NOT_METRICS)
