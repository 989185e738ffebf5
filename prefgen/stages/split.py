"""DVC stage `split`: params.yaml [split] -> data/03_features/split.parquet, metrics, an MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefgen.config import SplitConfig
from prefgen.data import split
from prefgen.stages.common import run_stage


def run(cfg: SplitConfig, params: dict[str, Any] | None, metrics_path: Path | None, root: Path) -> dict[str, Any]:
    return run_stage("split", params, root, metrics_path, lambda: split.run(cfg, Path(cfg.tables_dir), Path(cfg.out)))
