"""DVC stage `split`: params.yaml [split], the tables (paths.tables) -> every image's split (paths.split)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.data import split
from prefgen.data.config import SplitConfig
from prefgen.params import section
from prefgen.paths import Paths

USER_ERRORS = (ValueError, FileNotFoundError)  # no ingested tables there, or no image in them


def load_config(params: dict[str, Any] | None) -> SplitConfig:
    return section(params, SplitConfig, "split")


def run(cfg: SplitConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    return split.run(cfg, paths.tables, paths.split)
