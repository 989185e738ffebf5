"""The generation evaluation's protocol: prompts, pairs, judging, intervals, and the Fréchet distance."""

import numpy as np
import pytest

from prefgen.eval.config import EvalGenerationConfig
from prefgen.eval.generation import Pair, arm_metrics, arm_rows, bootstrap_interval, draw_pairs, judged_utility, named_attribute
from prefgen.eval.image_quality import frechet_distance
from prefgen.eval.oracle import Reading
from prefgen.generation.config import GuidanceConfig
from prefgen.params import ConfigError, load_params
from prefgen.stages import eval_generation
from prefgen.vision.config import VisualFeaturesConfig
from tests.conftest import ROOT
from tests.generation.test_sampling import pipeline


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
