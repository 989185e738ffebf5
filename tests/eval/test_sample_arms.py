"""Sampling the evaluation's arms: batches, shared unguided steps and worker processes change no image beyond rounding."""

from dataclasses import replace
from functools import partial

import pytest
import torch

from prefgen.eval.sample_arms import ARMS, Workers, first_guided_step, sample_arms, shared_starts
from prefgen.generation.config import GuidanceConfig
from tests.generation.test_sampling import pipeline

JOBS = [("a", "a"), ("b", "b"), ("a", "b"), ("b", "a"), ("a", "a")]
SEEDS = [7, 3, 12, 5, 9]  # one noise seed per job, in no order
GUIDED = GuidanceConfig(steps=4, lambda_pref=0.5, lambda_text=0.5, guide_from=0.5, guide_until=1.0)


def arms(*names: str) -> dict[str, GuidanceConfig]:
    return {name: replace(GUIDED, **ARMS[name]) for name in names}


def images(workers: Workers, arm_settings: dict[str, GuidanceConfig], per_batch: int) -> dict[str, torch.Tensor]:
    shape = pipeline().latent_shape
    return {arm: pixels for arm, pixels, _ in sample_arms(workers, arm_settings, JOBS, 2, shape, SEEDS, per_batch)}


def test_arms_that_differ_only_where_gradients_act_share_the_steps_before():
    settings = {name: replace(GuidanceConfig(steps=20, guide_from=0.2, guide_until=0.7, lambda_pref=0.2, lambda_text=0.1), **change)
                for name, change in ARMS.items()}
    assert [first_guided_step(settings[a]) for a in ("none", "cfg", "fused")] == [20, 20, 4]
    assert shared_starts(settings) == [(["cfg", "text_grad", "pref_grad", "fused"], 4)]  # `none` has no CFG: it shares nothing
    assert shared_starts({"cfg": settings["cfg"], "cfg_too": settings["cfg"]}) == [(["cfg", "cfg_too"], 19)]
    assert shared_starts({"fused": replace(settings["fused"], guide_from=0.0), "cfg": settings["cfg"]}) == []


def test_shared_steps_and_batches_give_each_arm_the_images_it_gets_alone():
    """Five jobs, one per call or three per call (the last batch short); cfg and fused share their first two steps."""
    workers = Workers(pipeline, local=pipeline())
    alone = {arm: images(workers, arms(arm), per_batch=2)[arm] for arm in ("cfg", "fused")}
    together = images(workers, arms("none", "cfg", "fused"), per_batch=6)
    assert together["fused"].shape == (5, 2, 3, 16, 16) and list(together) == ["none", "cfg", "fused"]
    for arm in ("cfg", "fused"):
        assert torch.allclose(together[arm], alone[arm], atol=1e-4)
    assert not torch.allclose(together["cfg"], together["fused"], atol=1e-3)  # the guides act after the shared steps
    workers.local.guidance = GUIDED
    third_alone = workers.local("a", "b", n=2, generator=torch.Generator().manual_seed(12))
    assert torch.allclose(together["fused"][2], third_alone, atol=1e-5)  # job j starts from the noise of its seed
    with pytest.raises(ValueError, match="one noise seed per job"):
        next(sample_arms(workers, arms("cfg"), JOBS, 2, pipeline().latent_shape, SEEDS[:4], 6))


def test_worker_processes_give_the_images_one_process_gives():
    """`none` is queued before the shared steps come back, cfg and fused after: the order the calls run in
    changes no bit."""
    settings = arms("none", "cfg", "fused")
    one = images(Workers(pipeline, local=pipeline()), settings, per_batch=4)
    with Workers(partial(pipeline), workers=2, threads=2) as two_workers:
        two = images(two_workers, settings, per_batch=4)
    for arm in settings:
        assert torch.equal(one[arm], two[arm])  # same batches, one thread each: the same bits


def test_worker_processes_need_a_factory_they_can_import():
    with pytest.raises(ValueError, match="picklable"):
        Workers(lambda: pipeline(), workers=2)
