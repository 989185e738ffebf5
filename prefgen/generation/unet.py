"""Step 3.3: the jointly conditioned denoiser eps_theta(z_t, t, s, W(e^)) and its noise schedule (diffusers).

The two conditions are two tokens of the UNet's cross-attention context, both in
the CLIP text space: [s, W(e^)] of shape (B, 2, D). A dropped condition is a zero
token, the "null" of classifier-free guidance; training drops each on its own, so
guidance can act on the text, on the preference, or on both.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import Tensor

from prefgen.generation.config import TrainDiffusionConfig

TEXT_TOKEN, PREF_TOKEN = 0, 1  # positions in the context: which token is which condition


def unet_channels(cfg: TrainDiffusionConfig, latent_size: int) -> tuple[int, ...]:
    """Each UNet level's width: one level per halving of `latent_size` down to cfg.bottleneck_size, widths doubling."""
    levels, side = 1, latent_size
    while side > cfg.bottleneck_size and side % 2 == 0:
        side, levels = side // 2, levels + 1
    if side != cfg.bottleneck_size:
        raise ValueError(f"latents of side {latent_size} do not halve to train_diffusion.bottleneck_size={cfg.bottleneck_size}: "
                         "the latent side must be bottleneck_size times a power of two")
    return tuple(cfg.base_channels * 2**level for level in range(levels))


def build_unet(cfg: TrainDiffusionConfig, latent_channels: int, sample_size: int, cond_dim: int) -> UNet2DConditionModel:
    """A seeded UNet2DConditionModel for latents of side `sample_size`, its depth from `unet_channels`, with
    cross-attention at every level whose side is at most cfg.attention_max_size (the conditions reach every
    scale through those levels and the skip connections)."""
    channels = unet_channels(cfg, sample_size)
    attends = [sample_size // 2**level <= cfg.attention_max_size for level in range(len(channels))]
    torch.manual_seed(cfg.seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
        block_out_channels=channels, layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups, cross_attention_dim=cond_dim, attention_head_dim=cfg.attention_head_dim)


def build_noise_scheduler(cfg: TrainDiffusionConfig) -> DDPMScheduler:
    """The forward process z_t = sqrt(a_t) z + sqrt(1 - a_t) eps used in training; samplers load its config.

    clip_sample is off: the latents are scaled to unit variance, not to [-1, 1] like pixels, and a
    sampler clipping its x0-prediction there would cut about a third of every latent (diffusers'
    default is on; Stable Diffusion's latent schedulers turn it off too)."""
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, prediction_type="epsilon",
                         clip_sample=False)


def context(text: Tensor, pref: Tensor) -> Tensor:
    """(B, D) text and (B, D) preference conditions -> the (B, 2, D) cross-attention context."""
    if text.shape != pref.shape:
        raise ValueError(f"text {tuple(text.shape)} and preference {tuple(pref.shape)} conditions must have one shape")
    return torch.stack([text, pref], dim=1)


def drop_conditions(text: Tensor, pref: Tensor, text_p: float, pref_p: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Zero each row's text with probability text_p and its preference with pref_p, independently.

    The draws come from `gen` on the CPU, so a seed drops the same rows on every device."""
    keep_text = (torch.rand(len(text), generator=gen) >= text_p).to(text.device, text.dtype).unsqueeze(1)
    keep_pref = (torch.rand(len(pref), generator=gen) >= pref_p).to(pref.device, pref.dtype).unsqueeze(1)
    return text * keep_text, pref * keep_pref
