"""The 1-positive + 100-negatives protocol of group recommendation (AGREE, ConsRec), tie-aware.

Each test row holds one held-out positive and its listed negatives. All
candidates are scored as the model scores them — no masking of items seen in
training — and ties are broken in expectation: with g negatives scored strictly
higher and t tied with the positive, the positive's rank is uniform on
g .. g+t, so

    HR@K   = #{r in g..g+t : r < K} / (t + 1)
    NDCG@K = sum over those r of 1/log2(r + 2), divided by (t + 1)

Public code that puts the positive first and lets ties fall its way inflates
results; this is the fair expectation (see ../shared/data/README.md).
"""

from __future__ import annotations

import numpy as np


def tie_aware_metrics(pos_scores: np.ndarray, neg_scores: np.ndarray, ks: tuple[int, ...] = (5, 10)) -> dict[str, float]:
    """pos_scores: (n,), neg_scores: (n, m). Returns HR@K and NDCG@K means over rows."""
    pos = np.asarray(pos_scores, dtype=np.float64)[:, None]
    neg = np.asarray(neg_scores, dtype=np.float64)
    greater = (neg > pos).sum(axis=1)
    tied = (neg == pos).sum(axis=1)
    out: dict[str, float] = {}
    max_rank = neg.shape[1] + 1
    ranks = np.arange(max_rank)
    in_range = (ranks[None, :] >= greater[:, None]) & (ranks[None, :] <= (greater + tied)[:, None])
    weight = in_range / (tied + 1)[:, None]
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float((weight * hit).sum(axis=1).mean())
        out[f"NDCG@{k}"] = float((weight * hit / np.log2(ranks + 2)).sum(axis=1).mean())
    return out


def per_row_metrics(pos_scores: np.ndarray, neg_scores: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-row expected HR@k and NDCG@k (for paired bootstrap intervals)."""
    pos = np.asarray(pos_scores, dtype=np.float64)[:, None]
    neg = np.asarray(neg_scores, dtype=np.float64)
    greater, tied = (neg > pos).sum(axis=1), (neg == pos).sum(axis=1)
    ranks = np.arange(neg.shape[1] + 1)
    weight = ((ranks >= greater[:, None]) & (ranks <= (greater + tied)[:, None])) / (tied + 1)[:, None]
    return {f"HR@{k}": (weight * (ranks < k)).sum(axis=1),
            f"NDCG@{k}": (weight * (ranks < k) / np.log2(ranks + 2)).sum(axis=1)}
