"""The generation evaluation's protocol: prompts, pairs, judging, intervals, and the Fréchet distance."""

import numpy as np
import polars as pl
import pytest
import torch
from diffusers import DDIMScheduler

from prefgen.data.tastes import N_H, N_P, N_S
from prefgen.eval.config import EvalGenerationConfig
from prefgen.eval.generation import (
    Pair,
    arm_metrics,
    arm_rows,
    bootstrap_interval,
    draw_pairs,
    evaluate,
    half_metrics,
    judged_utility,
    named_attribute,
    noise_seed,
    pair_key,
)
from prefgen.eval.image_quality import frechet_distance
from prefgen.eval.oracle import Oracle, OracleNet, Reading
from prefgen.eval.sample_arms import Workers
from prefgen.eval.truth import Truth
from prefgen.generation import vq
from prefgen.generation.config import GuidanceConfig
from prefgen.generation.sampling import PreferenceDiffusionPipeline
from prefgen.generation.unet import build_noise_scheduler, build_unet
from prefgen.metrics.dev_test import half
from prefgen.params import ConfigError, load_params
from prefgen.stages import eval_generation
from prefgen.vision.config import VisualFeaturesConfig
from tests.conftest import ROOT
from tests.generation.test_sampling import pipeline, redness
from tests.generation.tiny import DIFFUSION, VQ


def test_each_prompt_names_exactly_one_attribute():
    assert named_attribute("a star") == ("shape", 3)
    assert named_attribute("A shape on a dots background") == ("pattern", 2)
    assert named_attribute("something red") == ("hue", 0)
    for bad in ("a red star", "a picture"):
        with pytest.raises(ConfigError, match=repr(bad)):
            named_attribute(bad)


def _utilities(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 4, 4))


def test_pairs_are_disjoint_per_prompt_and_differ_in_taste():
    u = _utilities(40)
    pairs = draw_pairs(u, ["a star", "a circle"], 5, 1.0, np.random.default_rng(0))
    distance = 1 - np.corrcoef(u.reshape(40, -1))
    assert len(pairs) == 10
    for prompt in ("a star", "a circle"):
        used = [i for p in pairs if p.prompt == prompt for i in (p.a, p.b)]
        assert len(used) == len(set(used)) == 10
    assert all(distance[p.a, p.b] >= 1.0 for p in pairs)


def test_too_few_distant_segments_is_a_clear_error():
    same = np.repeat(_utilities(1), 6, axis=0)  # identical tastes: no pair is far enough
    with pytest.raises(ValueError, match="only 0 of 2 pairs"):
        draw_pairs(same, ["a star"], 2, 0.5, np.random.default_rng(0))


def test_an_unread_hue_scores_the_mean_over_hues():
    u = _utilities(1)[0]
    reading = Reading(np.array([2, -1]), np.array([1, 1]), np.array([3, 3]), np.zeros((2, 4)))
    assert judged_utility(u, reading) == pytest.approx([u[2, 3, 1], u[:, 3, 1].mean()])


def _reading(hue, shape, pattern):
    return Reading(np.array(hue), np.array(shape), np.array(pattern), np.random.default_rng(0).normal(size=(len(hue), 4)))


def test_a_generator_that_follows_each_taste_wins_every_pair():
    u = np.zeros((2, 8, 4, 4))
    u[0, 1], u[1, 5] = 1.0, 1.0  # segment 0 likes hue 1, segment 1 hue 5
    pairs = [Pair("a star", 0, 1), Pair("a star", 1, 0)]
    # Job order: pair 0 (A=0, B=1), pair 1 (A=1, B=0); one image each; every image a star (shape 3).
    reading = _reading([1, 5, 5, 1], [3, 3, 3, 3], [0, 0, 0, 0])
    rows = arm_rows("fused", pairs, ["grp:a", "grp:b"], u, reading, 1)
    assert rows["segment"].to_list() == ["grp:a", "grp:b", "grp:b", "grp:a"]
    cfg = EvalGenerationConfig(bootstrap=100)
    metrics = arm_metrics(rows, reading.features, reading.features, cfg, np.random.default_rng(0))
    assert metrics["win_rate"] == 1.0 and metrics["text_consistency"] == 1.0 and metrics["utility_gain"] == 1.0
    assert metrics["win_rate_ci_low"] == 1.0 and metrics["frechet_oracle"] == pytest.approx(0, abs=1e-6)

    swapped = arm_rows("cfg", pairs, ["grp:a", "grp:b"], u, _reading([5, 1, 1, 5], [0, 3, 3, 0], [0, 0, 0, 0]), 1)
    worse = arm_metrics(swapped, reading.features, reading.features, cfg, np.random.default_rng(0))
    assert worse["win_rate"] == 0.0 and worse["text_consistency"] == 0.5


def test_ties_count_half():
    u = np.zeros((2, 8, 4, 4))
    rows = arm_rows("none", [Pair("a star", 0, 1)], ["ind:a", "ind:b"], u, _reading([0, 0], [3, 3], [0, 0]), 1)
    features = np.random.default_rng(1).normal(size=(4, 4))
    assert arm_metrics(rows, features, features, EvalGenerationConfig(bootstrap=10), np.random.default_rng(0))["win_rate"] == 0.5


def test_bootstrap_interval_covers_the_mean():
    values = np.random.default_rng(0).random(200) < 0.7
    low, high = bootstrap_interval(values.astype(float), 1000, np.random.default_rng(0))
    assert low < values.mean() < high and high - low < 0.2


def test_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_moved_one():
    a = np.random.default_rng(0).normal(size=(400, 6))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(6.0, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], a)


def test_config_refuses_unknown_arms_and_a_table_without_fused():
    with pytest.raises(ConfigError, match="arms"):
        EvalGenerationConfig(arms=["none", "magic"])
    with pytest.raises(ConfigError, match="fused"):
        EvalGenerationConfig(arms=["none", "cfg"])


def test_the_stage_config_holds_its_three_sections_with_their_profiles():
    params = load_params(ROOT / "params.yaml") | {"profile": "quality"}
    cfg = eval_generation.load_config(params)
    assert cfg.evaluation.arms == params["eval_generation"]["profiles"]["quality"]["arms"]
    assert cfg.sampler.steps == params["sampler"]["profiles"]["quality"]["steps"] and cfg.sampler.profile == "quality"
    assert cfg.visual == VisualFeaturesConfig(**params["visual_features"])
    defaults = eval_generation.load_config(None)
    assert (defaults.evaluation, defaults.sampler, defaults.visual) == (EvalGenerationConfig(), GuidanceConfig(), VisualFeaturesConfig())


def test_a_pairs_key_names_its_prompt_and_both_segments_and_its_noise_seeds_never_cross_halves():
    segments = [f"grp:g{k}" for k in range(40)]
    keys = [pair_key(Pair("a star", k, k + 1), segments) for k in range(0, 40, 2)]
    assert keys[0] == "a star|grp:g0|grp:g1" and pair_key(Pair("a circle", 1, 0), segments) == "a circle|grp:g1|grp:g0"
    seeds = {key: (noise_seed(0, key, "A"), noise_seed(0, key, "B")) for key in keys}
    assert {half(key) for key in keys} == {"dev", "test"}
    assert all(a % 2 == b % 2 == (half(key) == "test") for key, (a, b) in seeds.items())  # even in dev, odd in test
    assert len({s for pair in seeds.values() for s in pair}) == 2 * len(keys)  # a seed per side of each pair
    assert noise_seed(1, keys[0], "A") != noise_seed(0, keys[0], "A") == seeds[keys[0]][0]  # the evaluation's seed moves them all


def test_each_half_is_judged_on_its_own_pairs_alone():
    u = np.zeros((4, 8, 4, 4))
    u[[0, 2], 1] = 1.0  # segments 0 and 2 like hue 1; 1 and 3 like nothing
    segments = ["ind:a", "ind:b", "ind:c", "ind:d"]
    pairs = [Pair(prompt, a, b) for prompt in ("a star", "a circle", "a square", "a triangle") for a, b in ((0, 1), (2, 3))]
    halves = [half(pair_key(p, segments)) for p in pairs]
    assert set(halves) == {"dev", "test"}
    # every A image shows hue 1 in dev pairs (A wins) and hue 0 in test pairs (a tie): dev win rate 1, test 0.5
    hue = [value for h in halves for value in ((1, 0) if h == "dev" else (0, 0))]
    reading = _reading(hue, [3] * 16, [0] * 16)
    rows = arm_rows("fused", pairs, segments, u, reading, 1)
    assert rows["half"].to_list() == [h for h in halves for _ in range(2)]
    figures = half_metrics(rows, reading.features, reading.features, EvalGenerationConfig(bootstrap=10), np.random.default_rng(0))
    assert (figures["dev"]["win_rate"], figures["test"]["win_rate"]) == (1.0, 0.5)
    in_dev = (rows["half"] == "dev").to_numpy()
    none_in_test = half_metrics(rows.filter(in_dev), reading.features[in_dev], reading.features,
                                EvalGenerationConfig(bootstrap=10), np.random.default_rng(0))
    assert none_in_test["test"] == {} and none_in_test["dev"]["win_rate"] == 1.0


def segment_pipeline(segments: list[str]) -> PreferenceDiffusionPipeline:
    """The tiny seeded sampler of tests/generation, with a condition per segment and per prompt."""
    torch.manual_seed(0)
    unet = build_unet(DIFFUSION, latent_channels=VQ.latent_channels, sample_size=8, cond_dim=8)
    scheduler = DDIMScheduler.from_config(build_noise_scheduler(DIFFUSION).config)
    conditions = {s: torch.randn(8, generator=torch.Generator().manual_seed(k)) for k, s in enumerate(segments)}
    return PreferenceDiffusionPipeline(unet, scheduler, vq.build_vq(VQ), 1.0, lambda prompt: torch.full((8,), len(prompt) / 10),
                                       lambda segment, _prompt: conditions[segment], text_score=lambda x, _: x.mean((1, 2, 3)),
                                       pref_score=redness, guidance=GuidanceConfig(steps=3))


def test_the_stage_metrics_carry_a_dev_and_a_test_block_over_the_pairs_of_each_half():
    segments = [f"ind:u{k}" for k in range(8)]
    tastes = np.random.default_rng(0).normal(size=(8, N_H + N_P + N_S + N_H * N_S))
    individuals = pl.DataFrame({"individual_id": [s[4:] for s in segments], "taste": tastes.tolist()})
    truth = Truth("tiny", "sha", individuals, pl.DataFrame(), pl.DataFrame({"group_id": [], "taste": []}), pl.DataFrame())
    torch.manual_seed(0)
    oracle = Oracle(OracleNet(width=4, feature_dim=4), image_size=16)  # untrained: its readings are arbitrary but fixed
    cfg = EvalGenerationConfig(prompts=["a star", "a circle"], pairs_per_prompt=2, images_per_segment=1, min_taste_distance=0.0,
                               arms=["cfg", "fused"], bootstrap=10, images_per_batch=8, seed=1)  # seed 1: two pairs a half
    pipe = segment_pipeline(segments)
    reference = np.random.default_rng(1).normal(size=(20, 4))
    metrics, rows, _, pairs = evaluate(cfg, pipe.guidance, Workers(lambda: pipe, local=pipe), pipe.latent_shape, oracle, truth,
                                       segments, reference, log=lambda _: None)
    halves = [half(pair_key(p, segments)) for p in pairs]
    assert metrics["pairs"] == len(pairs) == 4 and {h: metrics[f"{h}_pairs"] for h in ("dev", "test")} == {
        h: halves.count(h) for h in ("dev", "test")}
    assert 0 < metrics["dev_pairs"] < 4  # both halves hold pairs
    assert "win_rate" not in metrics and sorted(metrics["seconds_per_image"]) == ["cfg", "fused"]
    for name in ("dev", "test"):
        mine = rows.filter((pl.col("half") == name) & (pl.col("arm") == "fused"))
        assert sorted(mine["pair"].unique()) == [k for k, h in enumerate(halves) if h == name]
        block = metrics[name]
        assert sorted(block["ablation"]) == ["cfg", "fused"] and block["win_rate"] == block["ablation"]["fused"]["win_rate"]
        consistent = [row[named_attribute(row["prompt"])[0]] == named_attribute(row["prompt"])[1] for row in mine.iter_rows(named=True)]
        assert block["text_consistency"] == pytest.approx(np.mean(consistent))
