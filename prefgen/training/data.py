"""Data loaders for the core: each epoch's order from a generator seeded by (seed, epoch) alone."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler


def epoch_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, shuffle: bool = True, workers: int = 0,
                 collate_fn=None) -> DataLoader:
    """Global batches of `dataset` for `epoch`: the same order in every process and on every rerun of the epoch.

    `workers` beyond 0 only pays where decoding images costs more than handing them between processes
    (BENCHMARKS.md measures it); the order does not depend on it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                      persistent_workers=False)
