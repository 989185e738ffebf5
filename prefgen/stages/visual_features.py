"""DVC stage `visual_features`: params.yaml [visual_features], every image of the tables (its prepared file under paths.prepared)
and the semantic tower (paths.clip) -> semantic, style and colour vectors (paths.visual), incrementally."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.params import section
from prefgen.paths import Paths
from prefgen.vision import features
from prefgen.vision.config import VisualFeaturesConfig


def load_config(params: dict[str, Any] | None) -> VisualFeaturesConfig:
    return section(params, VisualFeaturesConfig, "visual_features")


def run(cfg: VisualFeaturesConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    return features.run(cfg, paths.tables, paths.prepared, paths.clip, paths.visual, log=log)
