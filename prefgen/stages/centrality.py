"""DVC stage `centrality`: params.yaml [centrality], the tables and their split -> social features (paths.centrality)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.params import section
from prefgen.paths import Paths
from prefgen.social import centrality
from prefgen.social.config import CentralityConfig

USER_ERRORS = (FileNotFoundError,)  # no split file beside the tables (centrality counts train images only)


def load_config(params: dict[str, Any] | None) -> CentralityConfig:
    return section(params, CentralityConfig, "centrality")


def run(cfg: CentralityConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compute the features (activity on paths.split's train images only); `log` gets each feature's time."""

    def on_feature(feature: str, seconds: float) -> None:
        log(f"centrality: {feature:<24} {seconds:8.2f} s")

    return centrality.run(cfg, paths.tables, paths.centrality, paths.split, on_feature=on_feature)
