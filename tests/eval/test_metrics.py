"""The champion gate's metrics (params `registry.gate`) against values computed by hand on inputs small enough to check
on paper: eval_graph.influence_spearman, eval_mapper.cold_auc, eval_generation.win_rate and .text_consistency."""

import math

import numpy as np
import polars as pl
import pytest

from prefgen.eval.config import EvalGenerationConfig
from prefgen.eval.generation import arm_metrics
from prefgen.eval.graph import influence_spearman
from prefgen.eval.reference import cold_task, summarise_auc


def members(group: str, influence: list[float]) -> list[dict]:
    return [{"group_id": group, "member_id": f"{group}{k}", "influence": value} for k, value in enumerate(influence)]


def attention(group: str, weights: list[float | None]) -> list[dict]:
    return [{"group_segment_id": f"grp:{group}", "member_segment_id": f"ind:{group}{k}", "attention": w}
            for k, w in enumerate(weights) if w is not None]


def test_influence_spearman_averages_per_group_rank_correlations_with_ties_missing_and_small_groups():
    truth = pl.DataFrame(members("t", [0.1, 0.2, 0.3, 0.4]) + members("p", [3.0, 1.0, 2.0]) + members("m", [2.0, 1.0, 3.0])
                         + members("c", [1.0, 2.0, 3.0]) + members("s", [1.0, 2.0]))
    learned = pl.DataFrame(attention("t", [1.0, 2.0, 2.0, 3.0]) + attention("p", [0.5, 0.2, 0.1])
                           + attention("m", [0.3, None, 0.1]) + attention("c", [0.2, 0.2, 0.2]) + attention("s", [0.9, 0.1]))
    # t: ranks 1,2,3,4 against 1,2.5,2.5,4 (a tie): deviations (-1.5,-.5,.5,1.5) . (-1.5,0,0,1.5) = 4.5,
    #    over sqrt(5 * 4.5): rho = sqrt(0.9)
    # p: ranks 3,1,2 against 3,2,1: d^2 sums to 2, rho = 1 - 6*2 / (3*8) = 0.5
    # m: the missing member counts as attention 0 (lowest): ranks 2,1,3 against 3,1,2, d^2 sums to 2, rho = 0.5
    # c: constant attention scores 0; s: 2 members, under min_size 3, is left out
    rho, groups = influence_spearman(learned, truth, min_size=3)
    assert groups == 4
    assert rho == pytest.approx((math.sqrt(0.9) + 0.5 + 0.5 + 0.0) / 4, abs=1e-12)


def test_cold_auc_averages_segments_with_train_history_and_some_but_not_all_cold_positives():
    split = pl.DataFrame({"image_id": ["t1", "c1", "c2", "c3"], "split": ["train", "cold", "cold", "cold"]})
    clicks = pl.DataFrame({"segment_id": ["ind:a", "ind:a", "grp:g", "grp:g", "grp:g", "ind:d", "ind:d",
                                          "ind:nohistory", "ind:all", "ind:all", "ind:all", "ind:all"],
                           "image_id": ["t1", "c1", "t1", "c1", "c2", "t1", "c3",
                                        "c1", "t1", "c1", "c2", "c3"]})
    task = cold_task(clicks, split)
    assert task.cold_ids == ["c1", "c2", "c3"] and sorted(task.segments) == ["grp:g", "ind:a", "ind:d"]
    by_segment = {"ind:a": [0.9, 0.5, 0.5],  # its one positive (c1) ranked first: 1
                  "ind:d": [0.3, 0.3, 0.1],  # its positive (c3) ranked last: 0
                  "grp:g": [0.2, 0.8, 0.2]}  # positives c1, c2 against c3: a tie (0.5) and a win (1): 0.75
    scores = np.array([by_segment[s] for s in task.segments])
    assert summarise_auc(task, scores, "cold_auc") == {"cold_auc": pytest.approx(1.75 / 3), "cold_auc_individuals": 0.5,
                                                      "cold_auc_groups": 0.75}


def judged_rows(utilities: list[tuple[list[float], list[float]]], prompts: list[str], read: dict[str, list[int]]) -> pl.DataFrame:
    """arm_rows' layout: per pair, A's images then B's, with each image's utility for the pair's A."""
    n = len(utilities[0][0])
    rows = {"pair": [], "side": [], "prompt": [], "utility_for_a": []}
    for pair, ((a, b), prompt) in enumerate(zip(utilities, prompts)):
        rows["pair"] += [pair] * 2 * n
        rows["side"] += ["A"] * n + ["B"] * n
        rows["prompt"] += [prompt] * 2 * n
        rows["utility_for_a"] += a + b
    return pl.DataFrame(rows | read)


def test_win_rate_counts_ties_half_and_text_consistency_is_the_share_of_images_showing_the_named_value():
    # 4 pairs, 2 images a side. Mean utility for A: pair 0 A 0.7 > B 0.2 (win), pair 1 0.5 = 0.5 (tie, half),
    # pair 2 0.1 < 0.6 (loss), pair 3 1.0 > 0.0 (win): (1 + 0.5 + 0 + 1) / 4.
    utilities = [([0.6, 0.8], [0.2, 0.2]), ([0.4, 0.6], [0.5, 0.5]), ([0.0, 0.2], [0.6, 0.6]), ([1.0, 1.0], [0.0, 0.0])]
    # "a star" names shape 3, "something red" hue 0: shape/hue read per image (hue -1: unread, never consistent).
    prompts = ["a star", "a star", "something red", "something red"]
    read = {"shape": [3, 3, 3, 0, 3, 1, 3, 3] + [0, 0, 0, 0, 0, 0, 0, 0],  # pairs 0-1: 6 of 8 stars
            "hue": [5, 5, 5, 5, 5, 5, 5, 5] + [0, 0, -1, 2, 0, 0, 0, -1],  # pairs 2-3: 5 of 8 red
            "pattern": [0] * 16}
    rows = judged_rows(utilities, prompts, read)
    features = np.random.default_rng(0).normal(size=(16, 3))
    metrics = arm_metrics(rows, features, features, EvalGenerationConfig(bootstrap=20), np.random.default_rng(0))
    assert metrics["win_rate"] == 2.5 / 4
    assert metrics["text_consistency"] == 11 / 16
    assert metrics["utility_gain"] == pytest.approx((0.5 + 0.0 - 0.5 + 1.0) / 4)
    assert metrics["unread_hue_share"] == 2 / 16
    # the interval is over per-pair values: the per-pair win shares are 1, .5, 0, 1, so no resample leaves [0, 1]
    assert 0 <= metrics["win_rate_ci_low"] <= 2.5 / 4 <= metrics["win_rate_ci_high"] <= 1
