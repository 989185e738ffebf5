"""DVC stage `synth`: params.yaml [synth] -> the world's raw logs and PNGs (paths.raw), its ground truth (paths.truth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.data import synth
from prefgen.data.config import SynthConfig
from prefgen.data.worlds import FrozenWorldError
from prefgen.params import section
from prefgen.paths import Paths

USER_ERRORS = (FrozenWorldError,)  # these params or this code would change a frozen world


def load_config(params: dict[str, Any] | None) -> SynthConfig:
    return section(params, SynthConfig, "synth")


def run(cfg: SynthConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    return synth.run(cfg, paths.raw, paths.truth)
