"""DVC stage `centrality`: params.yaml [centrality] (tables + split) -> data/03_features/centrality, metrics, an MLflow run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefgen.config import CentralityConfig
from prefgen.social import centrality
from prefgen.stages.common import run_stage


def _progress(feature: str, seconds: float) -> None:
    print(f"centrality: {feature:<24} {seconds:8.2f} s", file=sys.stderr, flush=True)


def run(cfg: CentralityConfig, tables_dir: Path, out_dir: Path, split_path: Path, params: dict[str, Any] | None,
        metrics_path: Path | None, root: Path, progress: bool = True) -> dict[str, Any]:
    """Compute the features (activity on `split_path`'s train images only), write the metrics file,
    and log an MLflow run when `params` are given."""
    on_feature = _progress if progress else None
    return run_stage("centrality", params, root, metrics_path,
                     lambda: centrality.run(cfg, tables_dir, out_dir, split_path, on_feature=on_feature))
