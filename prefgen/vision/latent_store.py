"""VQ latents of a store's images, encoded once per VQ and streamed by the diffusion trainer like the images.

A latent store lives at `<root>/<key[:16]>/<name>/`, `key` the VQ's digest (`weights_digest`) and `name` what was
encoded (a split, or e.g. `train-flipped`). It holds float32 shards `<name>-<k>.npy` of (rows, C, h, w) in the
image dataset's row order, and a manifest with the key, the digest of the images encoded, and sums of the latents
and of their squares, so the trainer's scaling factor 1 / std needs no pass over the latents.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from prefgen.checkpoint import replace_folder
from prefgen.vision.image_store import (
    FORMAT,
    MANIFEST,
    ShardDataset,
    ShardWriter,
    StoreError,
    checked_shards,
    default_shard_rows,
    manifest_digest,
    read_manifest,
)

DIGESTED = ("format", "key", "source", "name", "shape", "shard_rows", "count", "sum", "sum_sq", "shards")


def weights_digest(module: nn.Module) -> str:
    """A digest of a module's weights (names, dtypes, shapes and values): the key of the latents it encodes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def latent_dir(root: Path, key: str, name: str) -> Path:
    return Path(root) / key[:16] / name


class LatentStore:
    """Written latents, checked on opening: manifest, key and every shard's header and length.

    Args:
        folder: the latent store's folder (see `latent_dir`).
        key: the digest of the VQ the caller will decode with; latents of another VQ are an error.
    """

    def __init__(self, folder: Path, key: str | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder, "latent store", DIGESTED)
        if key is not None and key != self.manifest["key"]:
            raise StoreError(f"{self.folder}: latents of VQ {self.manifest['key'][:16]}, not of VQ {key[:16]}; encode them again")
        self.shape, self.shard_rows = tuple(self.manifest["shape"]), int(self.manifest["shard_rows"])
        self._shards = checked_shards(self.folder, self.manifest["shards"], self.shard_rows, self.shape, np.float32)
        if sum(rows for _, _, rows in self._shards) != self.count:
            raise StoreError(f"{self.folder}: the shards do not hold the {self.count} rows the manifest counts")

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def source(self) -> str:
        """The digest of the images encoded (the image dataset's `digest`)."""
        return self.manifest["source"]

    @property
    def mean(self) -> float:
        return self.manifest["sum"] / (self.count * math.prod(self.shape))

    @property
    def std(self) -> float:
        """The latents' standard deviation over every element (unbiased, as `Tensor.std`)."""
        return pooled_std(self)

    def dataset(self) -> ShardDataset:
        """The latents as (float32 tensor (C, h, w), row) items, row i encoding the image dataset's row i."""
        return ShardDataset(self._shards, self.shard_rows, self.shape, np.float32, self.manifest["digest"])


def pooled_std(*stores: LatentStore) -> float:
    """The standard deviation of the latents of several stores taken together (e.g. a split and its mirror images)."""
    n = sum(store.count * math.prod(store.shape) for store in stores)
    total, total_sq = sum(store.manifest["sum"] for store in stores), sum(store.manifest["sum_sq"] for store in stores)
    return math.sqrt(max(total_sq - total**2 / n, 0.0) / max(n - 1, 1))


def _matches(folder: Path, key: str, source: str) -> bool:
    try:
        found = LatentStore(folder, key)
    except StoreError:
        return False
    return found.source == source


def _encode_into(tmp: Path, images: ShardDataset, encode: Callable[[Tensor], Tensor], name: str, batch_size: int,
                 shard_rows: int | None) -> dict[str, Any]:
    """Encode the images batch by batch into shards in `tmp`; returns the manifest's fields but key and source."""
    writer, shape, total, total_sq = None, (), 0.0, 0.0
    for pixels, _ in DataLoader(images, batch_size=batch_size, shuffle=False):
        latents = encode(pixels.float() / 255).detach().to("cpu", torch.float32).numpy()
        if writer is None:
            shape = latents.shape[1:]
            writer = ShardWriter(tmp, name, shard_rows or default_shard_rows(shape, np.float32), shape, np.float32)
        for row in latents:
            writer.add(row)
        total += float(latents.sum(dtype=np.float64))
        total_sq += float(np.square(latents, dtype=np.float64).sum())
    if writer is None:
        raise StoreError(f"no images to encode into {name}")
    shards = writer.close()
    return {"shape": list(shape), "shard_rows": writer.shard_rows, "count": len(images), "sum": total, "sum_sq": total_sq,
            "shards": shards}


@torch.no_grad()
def encode_latents(images: ShardDataset, encode: Callable[[Tensor], Tensor], root: Path, key: str, name: str,
                   batch_size: int = 256, shard_rows: int | None = None) -> LatentStore:
    """The latents of `images` under VQ `key`: read where already encoded from these images, else encoded and written.

    Args:
        images: an image store's dataset (`ImageStore.dataset(split)`), encoded in row order.
        encode: pixels (B, 3, H, W) float32 in [0, 1] on CPU -> latents (B, C, h, w); it moves them to its device.
        root: the folder of every latent store; this one goes to `latent_dir(root, key, name)`.
        key: the VQ's digest (`weights_digest(vq)`).
        name: what is encoded, e.g. the split, or `train-flipped` for an `encode` that mirrors first.
        batch_size: images per call of `encode`.
        shard_rows: rows per shard; by default shards of about 64 MiB.
    """
    folder = latent_dir(root, key, name)
    if _matches(folder, key, images.digest):
        return LatentStore(folder, key)

    def write(tmp: Path) -> None:
        fields = _encode_into(tmp, images, encode, name, batch_size, shard_rows)
        manifest = {"format": FORMAT, "key": key, "source": images.digest, "name": name} | fields
        manifest["digest"] = manifest_digest(manifest, DIGESTED)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    replace_folder(folder, write)
    return LatentStore(folder, key)
