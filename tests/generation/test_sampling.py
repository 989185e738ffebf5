"""The guided sampler with tiny seeded models: gradient fusion, determinism, and guidance moving images its way."""

import pytest
import torch
from diffusers import DDIMScheduler

from prefgen.generation import vq
from prefgen.generation.sampling import GuidanceConfig, PreferenceDiffusionPipeline, fuse
from prefgen.generation.unet import build_noise_scheduler, build_unet, context
from tests.generation.test_vq import squares
from tests.generation.tiny import DIFFUSION, VQ


def redness(pixels: torch.Tensor, _segment: str) -> torch.Tensor:
    return pixels[:, 0].mean((1, 2)) - pixels[:, 1:].mean((1, 2, 3))


def pipeline(vq_model=None, **guidance) -> PreferenceDiffusionPipeline:
    torch.set_num_threads(1)  # tiny ops: a second thread only adds synchronisation (badly so on a busy box)
    unet = build_unet(DIFFUSION, latent_channels=VQ.latent_channels, sample_size=8, cond_dim=8)
    scheduler = DDIMScheduler.from_config(build_noise_scheduler(DIFFUSION).config)
    conditions = {"a": torch.ones(8), "b": -torch.ones(8)}
    return PreferenceDiffusionPipeline(unet, scheduler, vq_model or vq.build_vq(VQ), 1.0, conditions.__getitem__, lambda segment, _prompt: conditions[segment],
                                       text_score=lambda x, _: x.mean((1, 2, 3)), pref_score=redness,
                                       guidance=GuidanceConfig(steps=10, **guidance))


def test_fuse_removes_the_conflicting_component_and_adds_agreeing_ones():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 1.0]])  # cosine < 0: they conflict
    fused_a_only, fused_b_only = fuse(a, b, 1.0, 0.0), fuse(a, b, 0.0, 1.0)
    assert torch.dot(fused_a_only[0], b[0]).abs() < 1e-6 and torch.dot(fused_b_only[0], a[0]).abs() < 1e-6
    same = fuse(a, 3 * a, 0.5, 0.5)  # agreeing: both unit-RMS, then weighted
    assert torch.allclose(same, torch.tensor([[2**0.5, 0.0]]))


def test_the_schedule_keeps_latents_beyond_one_and_the_sampler_refuses_one_that_clips():
    """Latents are unit-variance: a value 2.5 sd out must survive DDIM's x0-prediction, not be clipped to 1."""
    scheduler = DDIMScheduler.from_config(build_noise_scheduler(DIFFUSION).config)
    scheduler.set_timesteps(10)
    t = scheduler.timesteps[-1]
    z0 = torch.full((1, 4, 2, 2), 2.5)
    z_t = scheduler.alphas_cumprod[t].sqrt() * z0  # noise-free: eps = 0
    assert torch.allclose(scheduler.step(torch.zeros_like(z0), t, z_t).pred_original_sample, z0)
    with pytest.raises(ValueError, match="clip_sample=False"):
        PreferenceDiffusionPipeline(build_unet(DIFFUSION, 4, 8, 8), DDIMScheduler.from_config(scheduler.config, clip_sample=True),
                                    vq.build_vq(VQ), 1.0, None, None, None, None)


def test_a_fixed_generator_gives_the_same_images():
    pipe = pipeline()
    first = pipe("a", "b", n=2, generator=torch.Generator().manual_seed(0))
    again = pipe("a", "b", n=2, generator=torch.Generator().manual_seed(0))
    other = pipe("a", "b", n=2, generator=torch.Generator().manual_seed(1))
    assert first.shape == (2, 3, 16, 16) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_jobs_sampled_in_one_batch_get_the_images_each_gets_alone():
    """Each image is conditioned and scored for its own job: "b"'s preference score is the opposite of "a"'s."""
    pipe = pipeline(lambda_pref=1.0, guide_from=0.0, guide_until=1.0, quantize_output=False)
    pipe.pref_score = lambda x, segments: redness(x, "") * torch.tensor([1.0 if s == "a" else -1.0 for s in segments])
    noise = torch.randn(4, *pipe.latent_shape, generator=torch.Generator().manual_seed(0))
    batched = pipe(["a", "b"], ["a", "b"], n=2, latents=noise)
    alone = torch.cat([pipe("a", "a", n=2, latents=noise[:2]), pipe("b", "b", n=2, latents=noise[2:])])
    assert batched.shape == (4, 3, 16, 16) and torch.allclose(batched, alone, atol=1e-4)
    assert not torch.allclose(alone[:2], pipe("b", "b", n=2, latents=noise[:2]), atol=1e-3)  # the job matters


def test_a_run_split_at_a_step_gives_the_images_of_one_run():
    pipe = pipeline(lambda_pref=1.0, lambda_text=0.5, guide_from=0.3, guide_until=0.8)
    noise = torch.randn(2, *pipe.latent_shape, generator=torch.Generator().manual_seed(3))
    latents = pipe("a", "b", n=2, latents=noise, stop_step=3)
    assert latents.shape == (2, *pipe.latent_shape)
    assert torch.equal(pipe("a", "b", n=2, latents=latents, start_step=3), pipe("a", "b", n=2, latents=noise))
    for start, stop in ((3, 3), (0, 11), (-1, 5)):
        with pytest.raises(ValueError, match="not a run"):
            pipe("a", "b", n=2, latents=noise, start_step=start, stop_step=stop)
    with pytest.raises(ValueError, match="no `latents`"):
        pipe("a", "b", n=2, start_step=3)


def test_mismatched_jobs_or_noise_are_refused():
    pipe = pipeline()
    with pytest.raises(ValueError, match="equal-length"):
        pipe(["a", "b"], ["a"], n=1)
    with pytest.raises(ValueError, match="equal-length"):
        pipe("a", ["a"], n=1)
    with pytest.raises(ValueError, match="these jobs need"):
        pipe(["a", "b"], ["a", "b"], n=2, latents=torch.zeros(2, *pipe.latent_shape))
    with pytest.raises(ValueError, match="one per image"):
        pipe("a", "a", n=2, generator=[torch.Generator()])


def test_classifier_free_guidance_combines_the_three_conditions_and_skips_unweighted_ones():
    pipe = pipeline(text_scale=3.0, pref_scale=2.0)
    z, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), pipe.scheduler.timesteps[0]
    text, pref, zero = torch.ones(2, 8), -torch.ones(2, 8), torch.zeros(2, 8)
    with torch.no_grad():
        e_none, e_text, e_both = (pipe.unet(z, t, encoder_hidden_states=context(a, b)).sample
                                  for a, b in ((zero, zero), (text, zero), (text, pref)))
    expected = e_none + 3.0 * (e_text - e_none) + 2.0 * (e_both - e_text)
    assert torch.allclose(pipe._eps(z, t, text, pref), expected, atol=1e-5)
    pipe.guidance = GuidanceConfig(steps=10, text_scale=1.0, pref_scale=1.0)  # the plain conditional model: one UNet pass
    assert torch.allclose(pipe._eps(z, t, text, pref), e_both, atol=1e-5)


@pytest.fixture(scope="module")
def trained_vq():
    """A VQ that has seen coloured squares for a few epochs: its decoder maps latents to images meaningfully."""
    model, _ = vq.fit_vq(squares(64), squares(8, seed=1), VQ, log=lambda _: None)
    return model


def test_one_guided_step_moves_the_x0_prediction_toward_the_segments_score(trained_vq):
    pipe = pipeline(vq_model=trained_vq, lambda_text=0.0)
    pipe.scheduler.set_timesteps(10)
    z, t = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0)), pipe.scheduler.timesteps[0]
    eps, alpha_bar = pipe._eps(z, t, torch.ones(4, 8), torch.ones(4, 8)), pipe.scheduler.alphas_cumprod[t]
    with torch.enable_grad():
        gradient = pipe._guidance_gradient(z, eps, alpha_bar, ["a"] * 4, ["a"] * 4)

    def score(guided_eps):
        return redness(pipe.decode((z - (1 - alpha_bar).sqrt() * guided_eps) / alpha_bar.sqrt(), quantize=False), "a").mean()
    assert score(eps - (1 - alpha_bar).sqrt() * gradient) > score(eps) + 0.02


def test_preference_guidance_raises_the_segments_score_over_no_guidance(trained_vq):
    def images(lambda_pref):
        pipe = pipeline(vq_model=trained_vq, lambda_pref=lambda_pref, lambda_text=0.0, guide_from=0.0, guide_until=1.0, quantize_output=False)
        return pipe("a", "a", n=4, generator=torch.Generator().manual_seed(0))
    assert redness(images(1.0), "a").mean() > redness(images(0.0), "a").mean() + 0.005


def test_a_seed_gives_the_cpu_generators_noise_whatever_the_models_dtype_and_every_tensor_follows_the_models():
    """Noise is drawn in float32 on the CPU, then moved: a tensor made in an assumed dtype would not meet float64 weights."""
    pipe = pipeline(lambda_pref=1.0, lambda_text=0.5, guide_from=0.0, guide_until=1.0)
    seeds = [torch.Generator().manual_seed(s) for s in (4, 5)]
    expected = torch.cat([torch.randn((1, *pipe.latent_shape), generator=torch.Generator().manual_seed(s)) for s in (4, 5)])
    assert torch.equal(pipe._starting_noise(2, seeds, None), expected)
    single = pipe("a", "b", n=2, generator=[torch.Generator().manual_seed(s) for s in (4, 5)])
    pipe.unet.double(), pipe.vq.double()
    assert pipe.dtype == torch.float64 and pipe.device == torch.device("cpu")
    noise = pipe._starting_noise(2, [torch.Generator().manual_seed(s) for s in (4, 5)], None)
    assert noise.dtype == torch.float64 and torch.equal(noise, expected.double())
    double = pipe("a", "b", n=2, generator=[torch.Generator().manual_seed(s) for s in (4, 5)])
    assert double.dtype == torch.float64 and torch.allclose(double.float(), single, atol=1e-3)
