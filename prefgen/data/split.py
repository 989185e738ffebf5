"""Stage `split`: every image id -> train | val | cold, and the filter every trainer uses.

`cold` images stand in for new (generated) images: no training stage may read
an interaction with one, so cold-start scores are honest. `val` images are for
early stopping only. The assignment is a seeded hash of the image id, so an
image keeps its split when other images are added (incremental ingest).

With `holdout_days` > 0 the last days of interactions form a held-out window
(stage eval_holdout): it starts `holdout_days` before the latest image
interaction, its start is stored in the split file's metadata, no training
stage reads an event from it (`training_events`), and an image first seen in it
is cold, as a new image on a platform is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.data import contract as c
from prefgen.data.config import SplitConfig
from prefgen.data.tables import scan_parts, write_table_atomic

SPLITS = ("train", "val", "cold")
HOLDOUT_KEY = b"prefgen.holdout_from_ms"  # split file metadata: the held-out window's first millisecond
DAY_MS = 86_400_000
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
    start = window_start(tables_dir, cfg.holdout_days)
    if start is not None:
        new = first_seen(tables_dir).filter(pl.col("first_ms") >= start)["image_id"]
        table = table.with_columns(split=pl.when(pl.col("image_id").is_in(new.implode())).then(pl.lit("cold")).otherwise("split"))
    metadata = {HOLDOUT_KEY: str(start).encode()} if start is not None else None
    write_table_atomic(table, out, SPLIT_SCHEMA.with_metadata(metadata))
    sizes = dict(table.group_by("split").len().iter_rows())
    window = {} if start is None else {"holdout_from_ms": start, "held_out_events": held_out_count(tables_dir, start)}
    return {"images": table.height, **{s: sizes.get(s, 0) for s in SPLITS}, **window}


def _image_events(tables_dir: Path) -> pl.LazyFrame:
    return scan_parts(tables_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA).filter(pl.col("type").is_in(IMAGE_TARGET_TYPES))


def window_start(tables_dir: Path, holdout_days: float) -> int | None:
    """The held-out window's first millisecond: holdout_days before the latest image interaction; None without one."""
    if holdout_days <= 0:
        return None
    last = _image_events(tables_dir).select(pl.col("ts").dt.epoch("ms").max()).collect().item()
    return None if last is None else int(last) - round(holdout_days * DAY_MS)


def first_seen(tables_dir: Path) -> pl.DataFrame:
    """(image_id, first_ms): each interacted image's first interaction."""
    return (_image_events(tables_dir).group_by(pl.col("target_id").alias("image_id"))
            .agg(first_ms=pl.col("ts").dt.epoch("ms").min()).collect())


def held_out_count(tables_dir: Path, start: int) -> int:
    return _image_events(tables_dir).filter(pl.col("ts").dt.epoch("ms") >= start).select(pl.len()).collect().item()


def holdout_from(split_path: Path) -> int | None:
    """The held-out window's first millisecond the split file records, or None where it has no window."""
    metadata = pq.read_schema(split_path).metadata or {}
    return int(metadata[HOLDOUT_KEY]) if HOLDOUT_KEY in metadata else None


def training_events(tables_dir: Path, split_path: Path, allowed: tuple[str, ...] = ("train",)) -> pl.LazyFrame:
    """Events a training stage may read: image interactions only with images in `allowed` splits, and no event of
    the held-out window.

    Events whose target is not an image (follows, memberships) pass through, unless in the window.
    Every training stage reads events through this function, never directly.
    """
    keep = pl.scan_parquet(split_path).filter(pl.col("split").is_in(allowed)).select(pl.col("image_id").alias("target_id"))
    events = scan_parts(tables_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA)
    start = holdout_from(split_path)
    if start is not None:  # the held-out window: no event in it, social or not, reaches training
        events = events.filter(pl.col("ts").dt.epoch("ms") < start)
    on_images = events.filter(pl.col("type").is_in(IMAGE_TARGET_TYPES)).join(keep, on="target_id", how="semi")
    return pl.concat([events.filter(~pl.col("type").is_in(IMAGE_TARGET_TYPES)), on_images])
