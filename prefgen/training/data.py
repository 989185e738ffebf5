"""Data loaders for the core: each epoch's order from a generator seeded by (seed, epoch) alone."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

from prefgen import checkpoint


def epoch_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, shuffle: bool = True, workers: int = 0,
                 collate_fn=None) -> DataLoader:
    """Global batches of `dataset` for `epoch`: the same order in every process and on every rerun of the epoch.

    `workers` beyond 0 only pays where decoding images costs more than handing them between processes
    (BENCHMARKS.md measures it); the order does not depend on it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                      persistent_workers=False)


def image_items(images: Tensor | Dataset) -> Dataset:
    """A Dataset of (image, row) items: a Dataset (an image store's split) as is, a (N, 3, H, W) tensor with rows 0..N-1."""
    return TensorDataset(images, torch.arange(len(images))) if isinstance(images, Tensor) else images


def unit_pixels(images: Tensor) -> Tensor:
    """Pixels in [0, 1]: uint8 images divided by 255 (as `read_split` decodes them), float images as they are."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def items_key(items: Dataset) -> str:
    """What a Dataset of images holds, for resume keys: a store split's digest, or a digest of in-memory tensors."""
    if isinstance(items, TensorDataset):
        return checkpoint.data_key(*items.tensors)
    if not isinstance(getattr(items, "digest", None), str):
        raise TypeError(f"{type(items).__name__}: neither a TensorDataset nor a dataset with a `digest`")
    return items.digest
