"""DVC stage `reference`: baseline scores on the synthetic world (reads its truth: evaluation only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefgen.config import ReferenceConfig
from prefgen.eval import reference
from prefgen.stages.common import run_stage


def run(cfg: ReferenceConfig, world: str, images_dir: Path, params: dict[str, Any] | None, metrics_path: Path | None,
        root: Path) -> dict[str, Any]:
    return run_stage("reference", params, root, metrics_path, lambda: reference.run(cfg, world, images_dir),
                     not_metrics=("world", "world_sha256", "ref_influence_best_feature"))
