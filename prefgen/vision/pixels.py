"""Reading prepared images (stage `prepare_images`, vision/prepare.py) as pixel tensors: (B, 3, size, size) float32 in [0, 1].

Every image the models see went through the preparation first: a square RGB PNG at the models' size, listed
in the prepared folder's manifest with its source's sha256, or a reason it has none. Readers here take the
manifest's word for which file holds an image and refuse a file of another size (a folder prepared at another
`image_size`): they never resize.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image, UnidentifiedImageError

from prefgen.data import contract as c
from prefgen.vision.prepare import MANIFEST

NOT_PREPARED = "not_prepared"  # the tables name an image the prepared manifest does not list: prepare_images is behind


def prepared_images(prepared_dir: Path) -> pl.DataFrame:
    """The prepared folder's manifest: image_id, prepared (the PNG's path inside the folder, "" if none), sha256
    (of the source file), reason ("" when prepared)."""
    manifest = prepared_dir / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"no prepared images in {prepared_dir} (no {MANIFEST}): run the prepare_images stage first")
    return pl.read_parquet(manifest, columns=["image_id", "prepared", "sha256", "reason"])


def with_pixels(tables_dir: Path, prepared_dir: Path) -> pl.DataFrame:
    """The tables' images that have a path, with their prepared file (absolute; "" if none) and the reason for none:
    image_id, caption, file, sha256, reason."""
    images = pl.read_parquet(tables_dir / c.IMAGES_FILE).filter(pl.col("path") != "").select("image_id", "caption")
    joined = images.join(prepared_images(prepared_dir), on="image_id", how="left")
    root = str(prepared_dir)
    return joined.select(
        "image_id", pl.col("caption").fill_null(""),
        file=pl.when(pl.col("prepared").fill_null("") != "").then(pl.lit(root + "/") + pl.col("prepared")).otherwise(pl.lit("")),
        sha256=pl.col("sha256").fill_null(""), reason=pl.col("reason").fill_null(NOT_PREPARED))


def read_pixels(path: Path, size: int) -> tuple[np.ndarray | None, str]:
    """(uint8 pixels (3, size, size), '') of a prepared image, or (None, reason): missing_file, undecodable_image, or
    wrong_size (prepared at another size: rerun prepare_images at this one)."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except FileNotFoundError:
        return None, "missing_file"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None, "undecodable_image"
    if rgb.size != (size, size):
        return None, "wrong_size"
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)), ""


def read_image(path: Path, size: int) -> tuple[torch.Tensor | None, str]:
    """`read_pixels` as float32 in [0, 1]."""
    pixels, reason = read_pixels(path, size)
    return (None, reason) if pixels is None else (torch.from_numpy(pixels).float() / 255.0, "")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def read_split(tables_dir: Path, prepared_dir: Path, split_path: Path, split_name: str, size: int,
               skipped: Counter) -> tuple[list[str], torch.Tensor, list[str]]:
    """(image ids, pixels, captions) of one split's prepared images, sorted by id; only that split's files are
    opened (no cold image is read by a trainer). Images without a readable prepared file are counted in `skipped`
    by `<split>.<reason>`, not fatal."""
    ids = pl.read_parquet(split_path).filter(pl.col("split") == split_name).select("image_id")
    images = with_pixels(tables_dir, prepared_dir).join(ids, on="image_id").sort("image_id")
    kept, pixels, captions = [], [], []
    for image_id, caption, file, reason in images.select("image_id", "caption", "file", "reason").iter_rows():
        image, reason = read_image(Path(file), size) if not reason else (None, reason)
        if image is None:
            skipped[f"{split_name}.{reason}"] += 1
            continue
        kept.append(image_id), pixels.append(image), captions.append(caption)
    if not pixels:
        raise ValueError(f"no readable {split_name} images in {prepared_dir}")
    return kept, torch.stack(pixels), captions
