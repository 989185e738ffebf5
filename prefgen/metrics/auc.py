"""ROC AUC of one segment's scores, in numpy alone: model code (the mapper's validation) imports it on machines
without scipy or polars, such as the GPU check's."""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (scipy's rankdata, method 'average')."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # the mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of one segment's scores (Mann-Whitney, ties as halves); positive is a boolean mask."""
    ranks = average_ranks(np.asarray(scores))
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
