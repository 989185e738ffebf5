"""DVC stage `train_oracle`: the evaluation oracle's shape and pattern classifier -> data/04_models/oracle, its accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefgen.eval import oracle
from prefgen.eval.config import TrainOracleConfig
from prefgen.stages.common import run_stage


def run(cfg: TrainOracleConfig, params: dict[str, Any] | None, root: Path) -> dict[str, Any]:
    return run_stage("train_oracle", params, root, Path(cfg.metrics) if params else None, lambda: oracle.run(cfg))
