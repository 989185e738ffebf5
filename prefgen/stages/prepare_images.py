"""DVC stage `prepare_images`: every image the tables name (paths.tables, files under paths.photos) as a square RGB PNG
at the models' size (paths.prepared), incrementally, with a reason for each one that has none (vision/prepare.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.data import contract as c
from prefgen.params import section
from prefgen.paths import Paths
from prefgen.vision.config import PrepareImagesConfig
from prefgen.vision.prepare import prepare_images

USER_ERRORS = (ValueError, FileNotFoundError)  # no tables or photos folder there, or an unreadable images table


def load_config(params: dict[str, Any] | None) -> PrepareImagesConfig:
    return section(params, PrepareImagesConfig, "prepare_images")


def run(cfg: PrepareImagesConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    counts = prepare_images(paths.photos, paths.tables / c.IMAGES_FILE, paths.prepared, cfg.image_size, cfg.max_pixels, log=log)
    return {"image_size": cfg.image_size} | counts
