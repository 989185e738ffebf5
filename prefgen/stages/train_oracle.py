"""DVC stage `train_oracle`: the evaluation oracle's shape and pattern classifier -> paths.oracle, its accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.eval import oracle
from prefgen.eval.config import TrainOracleConfig
from prefgen.params import section
from prefgen.paths import Paths


def load_config(params: dict[str, Any] | None) -> TrainOracleConfig:
    return section(params, TrainOracleConfig, "train_oracle")


def run(cfg: TrainOracleConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    return oracle.run(cfg, paths.oracle, log)
