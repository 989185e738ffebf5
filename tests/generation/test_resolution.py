"""Resolution is a parameter: the latent side follows the VQ's downsampling and the UNet's depth the latent side;
tiny seeded models train and sample at two image sizes."""

from dataclasses import replace

import pytest
import torch
from diffusers import DDIMScheduler

from prefgen.generation import vq
from prefgen.generation.sampling import GuidanceConfig, PreferenceDiffusionPipeline
from prefgen.generation.train_diffusion import fit as fit_diffusion, tensor_data
from prefgen.generation.unet import build_noise_scheduler, build_unet, unet_channels
from tests.generation.test_vq import squares
from tests.generation.tiny import DIFFUSION, VQ


def quiet(_line: str) -> None:
    pass


@pytest.mark.parametrize(("latent_size", "channels"), [(8, (32,)), (16, (32, 64)), (32, (32, 64, 128)), (64, (32, 64, 128, 256))])
def test_the_unet_gets_one_level_per_halving_down_to_the_bottleneck(latent_size, channels):
    assert unet_channels(replace(DIFFUSION, base_channels=32, bottleneck_size=8), latent_size) == channels


def test_levels_above_the_attention_size_have_no_attention_and_the_rest_keep_it():
    cfg = replace(DIFFUSION, base_channels=8, bottleneck_size=4, attention_max_size=8)
    unet = build_unet(cfg, latent_channels=4, sample_size=16, cond_dim=8)
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert unet.config.up_block_types == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    context = torch.randn(2, 2, 8)
    assert unet(torch.randn(2, 4, 16, 16), torch.tensor([3, 7]), encoder_hidden_states=context).sample.shape == (2, 4, 16, 16)


@pytest.mark.parametrize("latent_size", [4, 12, 24])
def test_a_latent_side_that_does_not_halve_to_the_bottleneck_is_refused(latent_size):
    with pytest.raises(ValueError, match=f"latents of side {latent_size} do not halve to train_diffusion.bottleneck_size=8"):
        unet_channels(replace(DIFFUSION, bottleneck_size=8), latent_size)


@pytest.mark.parametrize(("image_size", "levels"), [(16, 2), (32, 3)])
def test_tiny_models_train_and_sample_at_two_image_sizes(image_size, levels):
    torch.set_num_threads(1)  # tiny ops: a second thread only adds synchronisation
    vq_cfg = replace(VQ, image_size=image_size, epochs=1)
    images = squares(16, size=image_size)
    vq_model, _ = vq.fit_vq(images, images[:4], vq_cfg, log=quiet)
    with torch.no_grad():
        latents = vq_model.encode(images * 2 - 1).latents
    side = image_size // 2 ** (len(VQ.block_out_channels) - 1)  # the VQ halves between blocks
    assert latents.shape[-2:] == (side, side)
    gen = torch.Generator().manual_seed(0)
    text, pref = torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)
    data = tensor_data(latents, text, pref, latents[:4], text[:4], pref[:4], float(1 / latents.std()))
    unet, history = fit_diffusion(data, replace(DIFFUSION, epochs=1), log=quiet)
    assert len(unet.config.block_out_channels) == levels and unet.config.sample_size == side
    assert torch.isfinite(torch.tensor(history.epochs[-1]["loss"]))
    pipe = PreferenceDiffusionPipeline(unet, DDIMScheduler.from_config(build_noise_scheduler(DIFFUSION).config), vq_model,
                                       data.scaling_factor, lambda _p: text[0], lambda _s, _p: pref[0],
                                       text_score=lambda x, _: x.mean((1, 2, 3)), pref_score=lambda x, _: x[:, 0].mean((1, 2)),
                                       guidance=GuidanceConfig(steps=3, lambda_pref=1.0, lambda_text=1.0, guide_from=0.0))
    sampled = pipe("a", "b", n=2, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 3, image_size, image_size) and 0 <= sampled.min() and sampled.max() <= 1
