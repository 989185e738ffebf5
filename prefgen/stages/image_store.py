"""DVC stage `image_store`: the train and val images of the tables and split (paths.tables, paths.split), read once
from their prepared files (paths.prepared) into uint8 shards (paths.images) that the image trainers stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.params import section
from prefgen.paths import Paths
from prefgen.vision.config import ImageStoreConfig
from prefgen.vision.image_store import write_image_store

USER_ERRORS = (ValueError, FileNotFoundError)  # no tables or split there, or a store that cannot be written


def load_config(params: dict[str, Any] | None) -> ImageStoreConfig:
    return section(params, ImageStoreConfig, "image_store")


def run(cfg: ImageStoreConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    manifest = write_image_store(paths.tables, paths.prepared, paths.split, cfg.image_size, paths.images, cfg.shard_rows or None)
    log(f"image store: {manifest['counts']} images at {cfg.image_size} px into {paths.images}; skipped {manifest['skipped']}")
    return {"image_size": cfg.image_size, "images": manifest["counts"], "skipped": manifest["skipped"], "digest": manifest["digest"]}
