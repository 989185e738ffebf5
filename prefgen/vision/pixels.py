"""Reading images as pixel tensors: (B, 3, H, W) float32 in [0, 1], with reasons for the ones that fail."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image, UnidentifiedImageError

from prefgen.data import contract as c


def fit_size(rgb: Image.Image, size: int) -> tuple[Image.Image | None, str]:
    """(the image at size x size, '') or (None, reason): a larger square image is shrunk by area averaging (the
    filter the world's renderer uses); a smaller one is a reason, never upscaled (it holds no detail at that size),
    and so is a non-square one (no crop is chosen for the user here)."""
    width, height = rgb.size
    if width != height:
        return None, "not_square"
    if width < size:
        return None, "too_small"
    return (rgb if width == size else rgb.resize((size, size), Image.Resampling.BOX)), ""


def read_image(path: Path, size: int) -> tuple[torch.Tensor | None, str]:
    """(pixels (3, size, size), '') or (None, reason); see `fit_size` for images of another size."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except FileNotFoundError:
        return None, "missing_file"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None, "undecodable_image"
    rgb, reason = fit_size(rgb, size)
    if rgb is None:
        return None, reason
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous(), ""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def read_split(tables_dir: Path, images_dir: Path, split_path: Path, split_name: str, size: int,
               skipped: Counter) -> tuple[list[str], torch.Tensor, list[str]]:
    """(image ids, pixels, captions) of one split's images, sorted by id; only that split's files are
    opened (no cold image is read by a trainer). Unreadable files are counted in `skipped`, not fatal."""
    ids = pl.read_parquet(split_path).filter(pl.col("split") == split_name).select("image_id")
    images = pl.read_parquet(tables_dir / c.IMAGES_FILE).filter(pl.col("path") != "").join(ids, on="image_id").sort("image_id")
    kept, pixels, captions = [], [], []
    for image_id, path, caption in images.select("image_id", "path", "caption").iter_rows():
        image, reason = read_image(images_dir / path, size)
        if image is None:
            skipped[f"{split_name}.{reason}"] += 1
            continue
        kept.append(image_id), pixels.append(image), captions.append(caption or "")
    if not pixels:
        raise ValueError(f"no readable {split_name} images with paths in {tables_dir}")
    return kept, torch.stack(pixels), captions
