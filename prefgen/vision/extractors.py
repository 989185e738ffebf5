"""The three visual feature extractors of Step 2, v = s ⊕ t ⊕ c, as modules: the stage `visual_features` computes
every image's vectors with them and the scorer differentiates through them. No data IO here: model code that
imports it (the scorer, the GPU check) needs neither polars nor the tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from prefgen.vision import semantic
from prefgen.vision.colour import ColourConfig, ColourHistogram
from prefgen.vision.config import VisualFeaturesConfig
from prefgen.vision.style import GramStyle, StyleConfig


class ImageSizeError(ValueError):
    """An image is not the size a model expects; the message names both."""


def check_pixels(pixels: torch.Tensor, size: int) -> None:
    """Raise a clear error for a batch that is not (B, 3, size, size)."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ImageSizeError(f"expected pixels of shape (B, 3, {size}, {size}), got {tuple(pixels.shape)}")
    if tuple(pixels.shape[2:]) != (size, size):
        raise ImageSizeError(f"images are {pixels.shape[2]}x{pixels.shape[3]}; the models expect {size}x{size}")


PARTS = ("semantic", "style", "colour")
_VERSION = "1"  # bump when an extractor's code changes its output


class ImageTower(nn.Module):
    """s(x) as a module: the CLIP model's image embedding, so it moves with whatever holds it (`.to(device)`)."""

    def __init__(self, model: semantic.Model):
        super().__init__()
        self.model = model.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return semantic.embed_images(self.model, pixels)


def extractors(cfg: VisualFeaturesConfig, clip_dir: Path) -> dict[str, tuple[str, nn.Module]]:
    """part -> (extractor digest, module: pixels -> vectors); the semantic part is the image tower saved in `clip_dir`.
    Each is an eval-mode module built on the CPU: move it (or what holds it) to where the pixels are."""
    clip_model, _ = semantic.load_model(clip_dir)
    clip_digest = hashlib.sha256((clip_dir / semantic.WEIGHTS_FILE).read_bytes()).hexdigest()
    style_cfg = StyleConfig(dim=cfg.style_dim, seed=cfg.style_seed)
    colour_cfg = ColourConfig(l_bins=cfg.colour_l_bins, ab_bins=cfg.colour_ab_bins, bandwidth=cfg.colour_bandwidth)

    def digest(*parts: object) -> str:
        return hashlib.sha256(json.dumps([_VERSION, *map(str, parts)]).encode()).hexdigest()

    style, colour = GramStyle(style_cfg).eval(), ColourHistogram(colour_cfg).eval()
    return {"semantic": (digest("semantic", clip_digest), ImageTower(clip_model)),
            "style": (digest("style", style_cfg), style), "colour": (digest("colour", colour_cfg), colour)}
