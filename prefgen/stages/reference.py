"""DVC stage `reference`: baseline scores on the synthetic world (reads its truth, paths.truth: evaluation only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.eval import reference
from prefgen.eval.config import ReferenceConfig
from prefgen.params import section
from prefgen.paths import Paths

USER_ERRORS = (FileNotFoundError,)  # no ground truth (synth not run) or an input stage not run


def load_config(params: dict[str, Any] | None) -> ReferenceConfig:
    return section(params, ReferenceConfig, "reference")


def run(cfg: ReferenceConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    return reference.run(cfg, paths)
