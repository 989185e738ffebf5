"""The shared ranking protocol on tiny hand-checked inputs: hold-out, Recall/NDCG@k, AUC."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, strategies as st
from scipy.stats import rankdata

from prefgen.metrics import ranking
from prefgen.metrics.auc import auc, average_ranks


def test_auc_counts_pairs_and_splits_ties():
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    positive = np.array([True, False, True, False])
    # pairs (pos, neg): (0.9,0.8)=1 (0.9,0.1)=1 (0.8,0.8)=0.5 (0.8,0.1)=1 -> 3.5/4
    assert auc(scores, positive) == 0.875


@pytest.mark.parametrize(("scores", "positive", "expected"), [
    ([0.9, 0.1], [True, False], 1.0),
    ([0.1, 0.9], [True, False], 0.0),
    ([0.5, 0.5], [True, False], 0.5),  # a tie counts half
    ([0.9, 0.4, 0.4, 0.1], [True, True, False, False], (1 + 1 + 1 + 0.5) / 4),  # 2 positives x 2 negatives, one tie
])
def test_auc_is_the_share_of_positive_negative_pairs_ranked_right(scores, positive, expected):
    assert auc(np.array(scores), np.array(positive)) == expected


@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40))
def test_average_ranks_are_scipys(values):
    assert average_ranks(np.array(values, dtype=np.float64)).tolist() == rankdata(values).tolist()  # ties share their mean


def test_temporal_holdout_keeps_the_latest_fifth():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = pl.DataFrame({"segment_id": ["ind:a"] * 10 + ["ind:b"], "image_id": [f"i{k}" for k in range(11)],
                         "ts": [t0 + timedelta(days=k) for k in range(11)], "event_id": [f"e{k}" for k in range(11)]})
    learn, held = ranking.temporal_holdout(rows)
    assert held["image_id"].to_list() == ["i8", "i9"]  # b has one interaction: nothing to hold out
    assert sorted(learn["image_id"].to_list()) == sorted([f"i{k}" for k in range(8)] + ["i10"])


def test_rank_metrics_exclude_seen_items():
    scores = np.array([[5.0, 4.0, 3.0, 2.0]])
    metrics = ranking.rank_metrics(scores, [np.array([0])], [np.array([2])], k=2)
    assert metrics["recall@2"] == 1.0
    assert np.isclose(metrics["ndcg@2"], 1 / np.log2(3))
