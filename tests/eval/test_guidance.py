"""The judged evaluation of guidance (prefgen/eval/guidance.py): its segments, noise, prompts and figures."""

import numpy as np
import polars as pl
import pytest

from prefgen.data import contract as c
from prefgen.eval import guidance
from prefgen.eval.config import EvalGuidanceConfig
from prefgen.metrics.dev_test import half


def test_segments_are_picked_per_half_by_a_seeded_hash():
    candidates = [f"ind:u{k}" for k in range(200)] + [f"grp:g{k}" for k in range(20)]
    chosen = guidance.chosen_segments(candidates, 5, seed=0)
    assert sum(half(s) == "dev" for s in chosen) == sum(half(s) == "test" for s in chosen) == 5
    assert chosen == guidance.chosen_segments(list(reversed(candidates)), 5, seed=0)  # by id, not by order
    assert chosen != guidance.chosen_segments(candidates, 5, seed=1)
    assert set(guidance.chosen_segments(candidates[:3], 5, seed=0)) == set(candidates[:3])  # fewer than asked: all


def test_noise_seeds_are_even_in_dev_and_odd_in_test():
    segments = [f"ind:u{k}" for k in range(40)]
    seeds = {s: guidance.job_seed(0, s, "a star") for s in segments}
    assert all(seed % 2 == (half(s) == "test") for s, seed in seeds.items())
    assert len(set(seeds.values())) == len(segments) and guidance.job_seed(0, "ind:u1", "a circle") != seeds["ind:u1"]


def test_prompts_are_the_most_frequent_train_captions(tmp_path):
    captions = {"img0": "a dog", "img1": "a  dog", "img2": "a cat", "img3": "a cat", "img4": "a cat", "img5": "",
                "img6": "a bird", "img7": "a fish"}
    pl.DataFrame({"image_id": list(captions), "caption": list(captions.values())}).write_parquet(tmp_path / c.IMAGES_FILE)
    split = tmp_path / "split.parquet"
    pl.DataFrame({"image_id": list(captions), "split": ["train"] * 7 + ["cold"]}).write_parquet(split)
    assert guidance.catalogue_prompts(tmp_path, split, 2) == ["a cat", "a dog"]  # spaces folded; the cold image unread
    pl.DataFrame({"image_id": ["img0"], "split": ["train"]}).write_parquet(split)
    with pytest.raises(ValueError, match="two prompts"):
        guidance.catalogue_prompts(tmp_path, split, 4)


def test_a_half_s_figures_from_planted_judgements():
    segments = np.repeat([f"ind:u{k}" for k in range(6)], 4)
    rng = np.random.default_rng(0)
    none = rng.normal(size=len(segments))
    rows = pl.DataFrame({"segment": segments, "preference_none": none, "preference_cfg": none + 0.5,
                         "preference_fused": none + np.where(np.arange(len(segments)) % 4 == 0, 0.0, 1.0),
                         "text_match_none": False, "text_match_cfg": True, "text_match_fused": np.arange(len(segments)) % 2 == 0})
    figures = guidance._summary(rows, 4, EvalGuidanceConfig(bootstrap=200), np.random.default_rng(0))
    assert figures["segments"] == 6 and figures["jobs"] == 24 and figures["text_chance"] == 0.25
    assert figures["uplift_over_none"] == pytest.approx(0.75)
    assert figures["uplift_over_none_ci_low"] == figures["uplift_over_none_ci_high"] == pytest.approx(0.75)  # alike segments
    assert figures["win_over_none"] == pytest.approx(0.75 + 0.25 * 0.5)  # a tie counts half
    assert figures["uplift_over_cfg"] == pytest.approx(0.25) and figures["win_over_cfg"] == pytest.approx(0.75)
    assert figures["text_consistency"] == 0.5 and figures["text_consistency_cfg"] == 1.0 and figures["text_consistency_none"] == 0.0
