"""Bootstrap intervals that resample whole units (segments), so rows of one segment never count as independent."""

from __future__ import annotations

import numpy as np


def unit_interval(values: np.ndarray, units: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` (one per row), resampling the units (`units`: a unit index
    0..U-1 per row) with replacement and pooling their rows."""
    sums, counts = np.bincount(units, weights=values), np.bincount(units)
    draws = rng.integers(0, len(counts), (resamples, len(counts)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
