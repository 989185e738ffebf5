"""Reading images as pixel tensors: (B, 3, H, W) float32 in [0, 1], with reasons for the ones that fail."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageSizeError(ValueError):
    """An image is not the size a model expects; the message names both."""


def read_image(path: Path, size: int) -> tuple[torch.Tensor | None, str]:
    """(pixels (3, size, size), '') or (None, reason). Images of another size are a reason, not resized:
    the world's images and generated ones share one size, so another size means a wrong file."""
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
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous(), ""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def check_pixels(pixels: torch.Tensor, size: int) -> None:
    """Raise a clear error for a batch that is not (B, 3, size, size)."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ImageSizeError(f"expected pixels of shape (B, 3, {size}, {size}), got {tuple(pixels.shape)}")
    if tuple(pixels.shape[2:]) != (size, size):
        raise ImageSizeError(f"images are {pixels.shape[2]}x{pixels.shape[3]}; the models expect {size}x{size}")
