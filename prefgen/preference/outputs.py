"""Step 1's outputs as later steps read them (written by preference/export.py): segment vectors, item embeddings, P."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from safetensors.torch import load_file


@dataclass
class Step1:
    p: torch.Tensor  # (S, 2d)
    items: torch.Tensor  # (I, d)
    project: torch.Tensor  # (d, 2d): Step 1 scores a segment s and an image i as <P p_s, e_i>
    segment_row: dict[str, int]
    item_row: dict[str, int]


def load_step1(graph_dir: Path) -> Step1:
    vectors = load_file(graph_dir / "vectors.safetensors")
    segments = pl.read_parquet(graph_dir / "segments.parquet")
    items = pl.read_parquet(graph_dir / "items.parquet")
    return Step1(vectors["p"], vectors["items"], vectors["project"], dict(zip(segments["segment_id"], segments["row"])),
                 dict(zip(items["image_id"], items["row"])))
