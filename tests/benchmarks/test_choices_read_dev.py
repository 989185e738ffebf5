"""The benchmarks that choose settings (sweep.py's figures, sampler_sweep.py's rows) read dev figures only: fed metrics
whose `test` block fails on any access, they still come out right, from dev."""

import importlib.util

import polars as pl
import pytest

from tests.conftest import ROOT
from tests.metrics.test_dev_test import SealedTest


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUSED_DEV = {"win_rate": 0.75, "win_rate_ci_low": 0.5, "win_rate_ci_high": 1.0, "text_consistency": 0.5,
             "text_consistency_ci_low": 0.25, "text_consistency_ci_high": 0.75, "utility_gain": 0.2, "frechet_oracle": 3.0}


def test_the_sweep_reads_each_stages_dev_figure_and_refuses_a_test_one():
    sweep = load("sweep")
    found = {"eval_mapper": {"segments": 9, "dev": {"cold_auc": 0.7}, "test": SealedTest()},
             "eval_generation": {"dev": {"ablation": {"fused": {"win_rate": 0.6}}}, "test": SealedTest()},
             "train_vq": {"val_psnr": 21.0}}  # a training stage: its validation figures, no halves
    names = ["eval_mapper.cold_auc", "eval_generation.ablation.fused.win_rate", "train_vq.val_psnr"]
    assert sweep.dev_figures(found, names) == {"eval_mapper.cold_auc": 0.7, "eval_generation.ablation.fused.win_rate": 0.6,
                                               "train_vq.val_psnr": 21.0}
    with pytest.raises(ValueError, match="a choice reads dev only"):
        sweep.dev_figures(found, ["eval_mapper.test.cold_auc"])


def test_the_sampler_sweep_reports_a_setting_by_its_dev_pairs_and_dev_images():
    sampler_sweep = load("sampler_sweep")
    metrics = {"pairs": 4, "dev": FUSED_DEV | {"ablation": {"fused": FUSED_DEV}}, "test": SealedTest(),
               "seconds_per_image": {"fused": 0.4}}
    # dev images: 1 of 2 stars read as stars; test images: every one a star (a choice reading them would see 1.0)
    images = pl.DataFrame({"arm": ["fused"] * 4, "half": ["dev", "dev", "test", "test"], "prompt": ["a star"] * 4,
                           "shape": [3, 0, 3, 3], "hue": [0] * 4, "pattern": [0] * 4})
    row = sampler_sweep.setting_result("k=1", {"sampler.k": 1}, metrics, images)
    assert (row["win_rate"], row["text_consistency"], row["seconds_per_image"]) == (0.75, 0.5, 0.4)
    assert row["per_prompt_consistency"] == {"a star": 0.5} and row["ablation"]["fused"] == FUSED_DEV
    assert "| k=1 | 0.750 [0.500, 1.000] | 0.500 [0.250, 0.750] | 0.50 |" in sampler_sweep.table([row])
