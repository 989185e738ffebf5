"""Stage `split`: every image id -> train | val | cold, and the filter every trainer uses.

`cold` images stand in for new (generated) images: no training stage may read
an interaction with one, so cold-start scores are honest. `val` images are for
early stopping only. The assignment is a seeded hash of the image id, so an
image keeps its split when other images are added (incremental ingest).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow as pa

from prefgen.data import contract as c
from prefgen.data.config import SplitConfig
from prefgen.data.tables import scan_parts, write_table_atomic

SPLITS = ("train", "val", "cold")
SPLIT_SCHEMA = pa.schema([pa.field("image_id", pa.string(), nullable=False), pa.field("split", pa.string(), nullable=False)])
# Event types whose target is an image: the interactions a split filters.
IMAGE_TARGET_TYPES = tuple(t for t, (_, target) in c.EVENT_KINDS.items() if target == "image")


def _unit_interval(image_ids: pl.Series, seed: int) -> pl.Series:
    """A stable pseudo-random number in [0, 1) per id (sha256: stable across polars versions)."""
    values = [int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2**64 for i in image_ids]
    return pl.Series("u", values, dtype=pl.Float64)


def assign(image_ids: pl.Series, cfg: SplitConfig) -> pl.DataFrame:
    u = _unit_interval(image_ids, cfg.seed)
    split = (pl.when(u < cfg.cold_fraction).then(pl.lit("cold"))
             .when(u < cfg.cold_fraction + cfg.val_fraction).then(pl.lit("val")).otherwise(pl.lit("train")))
    return pl.DataFrame({"image_id": image_ids}).with_columns(u).select("image_id", split.alias("split")).sort("image_id")


def all_image_ids(tables_dir: Path) -> pl.Series:
    """Images in the manifest and images only seen as event targets."""
    manifest = pl.scan_parquet(tables_dir / c.IMAGES_FILE).select("image_id") if (tables_dir / c.IMAGES_FILE).is_file() else None
    targets = (scan_parts(tables_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA).filter(pl.col("type").is_in(IMAGE_TARGET_TYPES))
               .select(pl.col("target_id").alias("image_id")))
    frames = [f for f in (manifest, targets) if f is not None]
    return pl.concat(frames).unique().sort("image_id").collect()["image_id"]


def run(cfg: SplitConfig, tables_dir: Path, out: Path) -> dict:
    ids = all_image_ids(tables_dir)
    if ids.is_empty():
        raise ValueError(f"no images in {tables_dir}: neither images.parquet nor image-targeted events")
    table = assign(ids, cfg)
    write_table_atomic(table, out, SPLIT_SCHEMA)
    sizes = dict(table.group_by("split").len().iter_rows())
    return {"images": table.height, **{s: sizes.get(s, 0) for s in SPLITS}}


def training_events(tables_dir: Path, split_path: Path, allowed: tuple[str, ...] = ("train",)) -> pl.LazyFrame:
    """Events a training stage may read: image interactions only with images in `allowed` splits.

    Events whose target is not an image (follows, memberships) pass through.
    Every training stage reads events through this function, never directly.
    """
    keep = pl.scan_parquet(split_path).filter(pl.col("split").is_in(allowed)).select(pl.col("image_id").alias("target_id"))
    events = scan_parts(tables_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA)
    on_images = events.filter(pl.col("type").is_in(IMAGE_TARGET_TYPES)).join(keep, on="target_id", how="semi")
    return pl.concat([events.filter(~pl.col("type").is_in(IMAGE_TARGET_TYPES)), on_images])
