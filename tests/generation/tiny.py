"""Tiny seeded Step 3 models and data for fast CPU tests."""

from __future__ import annotations

import torch

from prefgen.generation.config import TrainDiffusionConfig, TrainVQConfig
from prefgen.generation.train_diffusion import DiffusionData, tensor_data

VQ = TrainVQConfig(block_out_channels=[8, 8], norm_num_groups=4, num_vq_embeddings=16, epochs=3, batch_size=8, threads=1, image_size=16)
DIFFUSION = TrainDiffusionConfig(base_channels=8, bottleneck_size=4, norm_num_groups=4, attention_head_dim=4, layers_per_block=1,
                                 num_train_timesteps=50, epochs=3, batch_size=8, threads=1, ema_decay=0.9)


def diffusion_data(n: int = 24, dim: int = 8, seed: int = 0) -> DiffusionData:
    gen = torch.Generator().manual_seed(seed)
    def rand(*shape):
        return torch.randn(*shape, generator=gen)
    return tensor_data(rand(n, 4, 8, 8), rand(n, dim), rand(n, dim), rand(6, 4, 8, 8), rand(6, dim), rand(6, dim))

