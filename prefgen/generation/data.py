"""Inputs of Step 3's stages, read from the outputs of Steps 1-2 (evaluation-only data and cold images are never read).

    e^_i = G(v_i)            Step 2's generator on the image's visual features
    s_i                      the image's semantic feature (CLIP image tower) -- W's target
    text_i                   the CLIP text embedding of the image's caption -- the text condition
    z_i = E(x_i) * scale     VQ latents, scaled to unit variance for the noise schedule
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file
from torch import Tensor

from prefgen.config import TrainMapperConfig
from prefgen.generation.config import TrainDiffusionConfig, TrainWConfig
from prefgen.generation.conditioning import PreferenceToText
from prefgen.generation.vq import load_vq
from prefgen.vision import semantic
from prefgen.vision.mapper_data import read_features
from prefgen.vision.pixels import read_split
from prefgen.vision.scorer import CONFIG_FILE, MAPPER_FILE, build_models

W_FILE, W_CONFIG = "w.safetensors", "config.json"


@dataclass
class DiffusionData:
    latents: Tensor  # (N, C, h, w) scaled VQ latents of train images (and their mirror images)
    text: Tensor  # (N, D) caption embeddings
    pref: Tensor  # (N, D) W(G(v_i))
    val_latents: Tensor
    val_text: Tensor
    val_pref: Tensor
    scaling_factor: float  # 1 / std of the train latents


def split_ids(split_path: Path, name: str) -> list[str]:
    return sorted(pl.read_parquet(split_path).filter(pl.col("split") == name)["image_id"].to_list())


def _rows(ids: list[str], wanted: list[str], what: str) -> np.ndarray:
    where = {image_id: row for row, image_id in enumerate(ids)}
    missing = [i for i in wanted if i not in where]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no {what}, e.g. {missing[:3]}; rerun the stage that makes it")
    return np.array([where[i] for i in wanted], dtype=np.int64)


@torch.no_grad()
def mapped_embeddings(mapper_dir: Path, features_dir: Path, image_ids: list[str]) -> Tensor:
    """e^ = G(v) of the given images, (len(image_ids), d)."""
    cfg = TrainMapperConfig(**json.loads((mapper_dir / CONFIG_FILE).read_text())["train_mapper"])
    g, _ = build_models(load_file(mapper_dir / MAPPER_FILE), cfg)
    ids, v = read_features(features_dir, cfg.part_names)
    return g(torch.from_numpy(v[_rows(ids, image_ids, "visual features")]))


def semantic_features(features_dir: Path, image_ids: list[str]) -> Tensor:
    ids, s = read_features(features_dir, ("semantic",))
    return torch.from_numpy(s[_rows(ids, image_ids, "semantic feature")])


def w_inputs(cfg: TrainWConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(e^, s) of the train images, then of the val images."""
    out = []
    for name in ("train", "val"):
        ids = split_ids(Path(cfg.split), name)
        out += [mapped_embeddings(Path(cfg.mapper_dir), Path(cfg.features_dir), ids), semantic_features(Path(cfg.features_dir), ids)]
    return out[0], out[1], out[2], out[3]


def load_w(folder: Path) -> PreferenceToText:
    meta = json.loads((folder / W_CONFIG).read_text())
    w = PreferenceToText(meta["in_dim"], meta["text_dim"], meta["train_w"]["hidden"])
    w.load_state_dict(load_file(folder / W_FILE))
    return w.eval()


@torch.no_grad()
def encode_latents(vq, pixels: Tensor, batch_size: int = 128) -> Tensor:
    """Unquantised VQ latents E(x) of pixels in [0, 1] (the diffusion model's space)."""
    return torch.cat([vq.encode(pixels[i : i + batch_size] * 2 - 1).latents for i in range(0, len(pixels), batch_size)])


def _conditions(cfg: TrainDiffusionConfig, ids: list[str], captions: list[str], clip, tokenizer, w) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        pref = w(mapped_embeddings(Path(cfg.mapper_dir), Path(cfg.features_dir), ids))
    return semantic.embed_texts(clip, tokenizer, captions), pref


def diffusion_inputs(cfg: TrainDiffusionConfig, skipped: Counter) -> DiffusionData:
    """Latents and both conditions of the train images (mirrored too, if asked) and of the val images."""
    vq, w = load_vq(Path(cfg.vq_dir)), load_w(Path(cfg.w_dir))
    clip, clip_cfg = semantic.load_model(Path(cfg.clip_dir))
    tokenizer = semantic.build_tokenizer(clip_cfg)
    size = vq.config.sample_size
    parts = {}
    for name in ("train", "val"):
        ids, pixels, captions = read_split(Path(cfg.tables_dir), Path(cfg.images_dir), Path(cfg.split), name, size, skipped)
        latents = encode_latents(vq, pixels)
        text, pref = _conditions(cfg, ids, captions, clip, tokenizer, w)
        if name == "train" and cfg.flip_augment:
            latents = torch.cat([latents, encode_latents(vq, pixels.flip(-1))])
            text, pref = text.repeat(2, 1), pref.repeat(2, 1)
        parts[name] = (latents, text, pref)
    scale = float(1 / parts["train"][0].std())
    (z, text, pref), (val_z, val_text, val_pref) = parts["train"], parts["val"]
    return DiffusionData(z * scale, text, pref, val_z * scale, val_text, val_pref, scale)
