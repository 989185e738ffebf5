"""DVC stage `eval_holdout`: Step 1 (paths.graph) on the clicks of the split's held-out window (paths.split, paths.tables)
against popularity, in dev and test halves; no ground truth."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.eval import holdout
from prefgen.eval.config import EvalHoldoutConfig
from prefgen.params import section
from prefgen.paths import Paths

USER_ERRORS = (FileNotFoundError, ValueError)  # no trained graph model, or no held-out window in the split


def load_config(params: dict[str, Any] | None) -> EvalHoldoutConfig:
    return section(params, EvalHoldoutConfig, "eval_holdout")


def run(cfg: EvalHoldoutConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    metrics = holdout.evaluate(cfg, paths.tables, paths.split, paths.graph)
    for half in ("dev", "test"):
        if half in metrics:
            log(f"eval_holdout: {half}: HR@{cfg.k} {metrics[half][f'hr{cfg.k}']:.4f} against popularity "
                f"{metrics[half][f'popularity_hr{cfg.k}']:.4f} over {metrics[half]['positives']} held-out clicks")
    return metrics
