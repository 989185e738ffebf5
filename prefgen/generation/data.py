"""Inputs of Step 3's stages, read from the outputs of Steps 1-2 (evaluation-only data and cold images are never read).

    e^_i = G(v_i)            Step 2's generator on the image's visual features
    s_i                      the image's semantic feature (CLIP image tower) -- W's target
    text_i                   the CLIP text embedding of the image's caption -- the text condition
    z_i = E(x_i) * scale     VQ latents of the image store's images, scaled to unit variance for the noise schedule
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.data import ConcatDataset

from prefgen import checkpoint
from prefgen.generation.conditioning import PreferenceToText
from prefgen.generation.config import TrainDiffusionConfig
from prefgen.paths import Paths
from prefgen.vision import semantic
from prefgen.vision.image_store import ImageStore
from prefgen.vision.latent_store import LatentStore, encode_latents, pooled_std, weights_digest
from prefgen.vision.mapper_data import read_features
from prefgen.vision.scorer import MAPPER_FILE, build_models, read_mapper_config

if TYPE_CHECKING:
    from prefgen.generation.train_diffusion import DiffusionData

W_FILE, W_CONFIG = "w.safetensors", "config.json"
LATENTS, LOCK_FILE = "latents", ".lock"  # the latent stores' folder under paths.checkpoints, and its lock


def split_ids(split_path: Path, name: str) -> list[str]:
    return sorted(pl.read_parquet(split_path).filter(pl.col("split") == name)["image_id"].to_list())


def featured_split_ids(split_path: Path, features_dir: Path, name: str) -> list[str]:
    """The split's images that have visual features: one the preparation rejected has none, and Step 3 learns from
    the others, as the mapper does, rather than stop the run."""
    featured = set(pl.read_parquet(features_dir / "semantic.parquet", columns=["image_id"])["image_id"].to_list())
    return [image_id for image_id in split_ids(split_path, name) if image_id in featured]


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
    train, val = featured_split_ids(split_path, features_dir, "train"), featured_split_ids(split_path, features_dir, "val")
    e = mapped_embeddings(mapper_dir, features_dir, train + val)
    s = semantic_features(features_dir, train + val)
    return e[: len(train)], s[: len(train)], e[len(train) :], s[len(train) :]


def load_w(folder: Path) -> PreferenceToText:
    meta = json.loads((folder / W_CONFIG).read_text())
    w = PreferenceToText(meta["in_dim"], meta["text_dim"], meta["train_w"]["hidden"])
    w.load_state_dict(load_file(folder / W_FILE))
    return w.eval()


@contextmanager
def one_process_at_a_time(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder`: the processes of a torchrun run encode a VQ's latents once, not all into one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def latent_stores(vq, store: ImageStore, root: Path, flip_augment: bool, batch_size: int = 128) -> dict[str, LatentStore]:
    """Unquantised VQ latents E(x) of the store's `train` images, of their mirror images (`train-flipped`, if asked)
    and of the `val` images: encoded in batches on the VQ's device the first time this VQ meets these images, else read."""
    def encode(pixels: Tensor) -> Tensor:
        return vq.encode(pixels.to(vq.device) * 2 - 1).latents

    def mirrored(pixels: Tensor) -> Tensor:
        return encode(pixels.flip(-1))

    wanted = {"train": ("train", encode), "train-flipped": ("train", mirrored), "val": ("val", encode)}
    if not flip_augment:
        del wanted["train-flipped"]
    key = weights_digest(vq)
    with one_process_at_a_time(root):
        stores = {name: encode_latents(store.dataset(split), how, root, key, name, batch_size)
                  for name, (split, how) in wanted.items()}
        for folder in root.iterdir():  # an earlier VQ's latents: of no use to any checkpoint, and images a deletion must not keep
            if folder.is_dir() and folder.name != key[:16]:
                shutil.rmtree(folder)
        return stores


def conditions(paths: Paths, w: PreferenceToText, ids: list[str], captions: list[str]) -> tuple[Tensor, Tensor]:
    """(text, pref) of the given images: the CLIP embedding of each caption, and W(G(v)) of each image."""
    clip, clip_cfg = semantic.load_model(paths.clip)
    with torch.no_grad():
        pref = w(mapped_embeddings(paths.mapper, paths.visual, ids))
    return semantic.embed_texts(clip, semantic.build_tokenizer(clip_cfg), captions), pref


def diffusion_inputs(cfg: TrainDiffusionConfig, paths: Paths, skipped: Counter) -> DiffusionData:
    """Latent datasets and both conditions of the image store's train images (mirrored too, if asked) and val images.

    The latents live in latent stores under `paths.checkpoints / "latents"`, encoded once per VQ; the trainer streams them.
    The conditions stay in memory, one row per image, shared by an image and its mirror image."""
    from prefgen.generation.vq import load_vq  # diffusers is slow to import: only the stages that encode pay it

    vq, w = load_vq(paths.vq), load_w(paths.w)
    store = ImageStore(paths.images, size=vq.config.sample_size)
    skipped.update(store.manifest["skipped"])
    latents = latent_stores(vq, store, paths.checkpoints / LATENTS, cfg.flip_augment)
    text, pref = conditions(paths, w, store.ids("train") + store.ids("val"), store.captions("train") + store.captions("val"))
    return streamed_data(latents, text, pref)


def streamed_data(latents: dict[str, LatentStore], text: Tensor, pref: Tensor) -> DiffusionData:
    """DiffusionData over latent stores (`latent_stores`' names), given the conditions of the train then the val images.

    The scaling factor is 1 / std of every train latent, mirror images' included; the resume key digests the latent
    stores and the conditions, not every latent."""
    from prefgen.generation.train_diffusion import DiffusionData  # imports diffusers: train_w, which imports this module, need not

    train = [latents[name] for name in ("train", "train-flipped") if name in latents]
    n = train[0].count
    digests = [found.manifest["digest"] for found in (*train, latents["val"])] + [checkpoint.data_key(text, pref)]
    key = hashlib.sha256(json.dumps(digests).encode()).hexdigest()
    return DiffusionData(ConcatDataset([found.dataset() for found in train]), text[:n], pref[:n], latents["val"].dataset(),
                         text[n:], pref[n:], 1 / pooled_std(*train), key)
