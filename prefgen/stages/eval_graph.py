"""DVC stage `eval_graph`: Step 1's learned member attention (paths.graph) against the world's true influence (paths.truth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.eval import graph
from prefgen.eval.config import EvalGraphConfig
from prefgen.params import section
from prefgen.paths import Paths

USER_ERRORS = (FileNotFoundError,)  # no ground truth (synth not run) or no trained graph model


def load_config(params: dict[str, Any] | None) -> EvalGraphConfig:
    return section(params, EvalGraphConfig, "eval_graph")


def run(cfg: EvalGraphConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    return graph.run(paths.truth, paths.graph, cfg.min_group_size)
