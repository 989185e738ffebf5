"""Reference baselines and the ranking protocol on tiny hand-checked inputs."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from prefgen.data import render
from prefgen.eval import ranking
from prefgen.eval.ranking import auc as _auc
from prefgen.eval.reference import colour_histogram, cold_auc


def test_auc_counts_pairs_and_splits_ties():
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    positive = np.array([True, False, True, False])
    # pairs (pos, neg): (0.9,0.8)=1 (0.9,0.1)=1 (0.8,0.8)=0.5 (0.8,0.1)=1 -> 3.5/4
    assert _auc(scores, positive) == 0.875


def test_colour_histogram_sees_the_shape_hue():
    spec = render.ImageSpec(hue=5, pattern=0, shape=0, hue_jitter=0, saturation=0.9, value=0.9, scale=0.7,
                            dx=0, dy=0, bg_light=0.9, bg_hue=0.0)
    hist = colour_histogram(np.asarray(render.render(spec, 64)))
    assert np.isclose(hist.sum(), 1.0)
    assert hist[:18].argmax() == int(225 / 360 * 18)  # blue


def test_nearest_centroid_ranks_the_matching_colour_first():
    hist = {"red1": np.eye(4)[0], "red2": np.eye(4)[0], "blue1": np.eye(4)[1], "blue2": np.eye(4)[1]}
    split = pl.DataFrame({"image_id": ["red1", "red2", "blue1", "blue2"], "split": ["train", "cold", "train", "cold"]})
    clicks = pl.DataFrame({"segment_id": ["ind:a", "ind:a"], "image_id": ["red1", "red2"]})
    assert cold_auc(clicks, split, hist)["ref_cold_auc"] == 1.0


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
