"""Inputs of Step 3's stages, read from the outputs of Steps 1-2 (evaluation-only data and cold images are never read).

    e^_i = G(v_i)            Step 2's generator on the image's visual features
    s_i                      the image's semantic feature (CLIP image tower) -- W's target
    text_i                   the CLIP text embedding of the image's caption -- the text condition
    z_i = E(x_i) * scale     VQ latents, scaled to unit variance for the noise schedule
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file
from torch import Tensor

from prefgen.generation.conditioning import PreferenceToText
from prefgen.generation.config import TrainDiffusionConfig
from prefgen.generation.train_diffusion import DiffusionData
from prefgen.paths import Paths
from prefgen.vision import semantic
from prefgen.vision.mapper_data import read_features
from prefgen.vision.pixels import read_split
from prefgen.vision.scorer import MAPPER_FILE, build_models, read_mapper_config

W_FILE, W_CONFIG = "w.safetensors", "config.json"


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
    cfg = read_mapper_config(mapper_dir)
    g, _ = build_models(load_file(mapper_dir / MAPPER_FILE), cfg)
    ids, v = read_features(features_dir, cfg.part_names)
    return g(torch.from_numpy(v[_rows(ids, image_ids, "visual features")]))


def semantic_features(features_dir: Path, image_ids: list[str]) -> Tensor:
    ids, s = read_features(features_dir, ("semantic",))
    return torch.from_numpy(s[_rows(ids, image_ids, "semantic feature")])


def w_inputs(mapper_dir: Path, features_dir: Path, split_path: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(e^, s) of the train images, then of the val images (features read once for both)."""
    train, val = split_ids(split_path, "train"), split_ids(split_path, "val")
    e = mapped_embeddings(mapper_dir, features_dir, train + val)
    s = semantic_features(features_dir, train + val)
    return e[: len(train)], s[: len(train)], e[len(train) :], s[len(train) :]


def load_w(folder: Path) -> PreferenceToText:
    meta = json.loads((folder / W_CONFIG).read_text())
    w = PreferenceToText(meta["in_dim"], meta["text_dim"], meta["train_w"]["hidden"])
    w.load_state_dict(load_file(folder / W_FILE))
    return w.eval()


@torch.no_grad()
def encode_latents(vq, pixels: Tensor, batch_size: int = 128) -> Tensor:
    """Unquantised VQ latents E(x) of pixels in [0, 1] (the diffusion model's space), encoded on the VQ's device, on the CPU."""
    return torch.cat([vq.encode(pixels[i : i + batch_size].to(vq.device) * 2 - 1).latents.cpu()
                      for i in range(0, len(pixels), batch_size)])


def diffusion_inputs(cfg: TrainDiffusionConfig, paths: Paths, skipped: Counter) -> DiffusionData:
    """Latents and both conditions of the train images (mirrored too, if asked) and of the val images."""
    from prefgen.generation.vq import load_vq  # diffusers is slow to import: only the stages that encode pay it

    vq, w = load_vq(paths.vq), load_w(paths.w)
    clip, clip_cfg = semantic.load_model(paths.clip)
    splits = {name: read_split(paths.tables, paths.raw, paths.split, name, vq.config.sample_size, skipped)
              for name in ("train", "val")}
    ids = splits["train"][0] + splits["val"][0]
    with torch.no_grad():  # both conditions of both splits in one pass: G, W and the text tower are read once
        pref = w(mapped_embeddings(paths.mapper, paths.visual, ids))
    text = semantic.embed_texts(clip, semantic.build_tokenizer(clip_cfg), splits["train"][2] + splits["val"][2])
    n = len(splits["train"][0])
    z, val_z = encode_latents(vq, splits["train"][1]), encode_latents(vq, splits["val"][1])
    train_text, train_pref = text[:n], pref[:n]
    if cfg.flip_augment:
        z = torch.cat([z, encode_latents(vq, splits["train"][1].flip(-1))])
        train_text, train_pref = train_text.repeat(2, 1), train_pref.repeat(2, 1)
    scale = float(1 / z.std())
    return DiffusionData(z * scale, train_text, train_pref, val_z * scale, text[n:], pref[n:], scale)
