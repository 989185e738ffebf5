"""Quality of the generation stack on the world's own images: what the decoder can make and what the oracle can read.

    vq_psnr_cold            VQ reconstruction PSNR on `cold` images (the autoencoder never trained on them)
    oracle_*_world          the oracle's accuracy on the world's cold images, and on their VQ reconstructions:
                            whether it reads images that went through our decoder at all
    frechet_oracle_*        Fréchet distance between Gaussians fitted to oracle features (eval/oracle.py),
                            against the `train` images: named for its feature space, it is not FID
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy import linalg

from prefgen.eval.oracle import Oracle, accuracy
from prefgen.eval.truth import Truth
from prefgen.generation.vq import psnr, reconstruct
from prefgen.vision.pixels import read_split


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two feature sets (rows are images)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 images a side, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    # A small ridge keeps the product's square root defined when a feature is constant on a side (dead ReLUs).
    ridge = 1e-6 * np.eye(a.shape[1])
    cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def world_images(tables_dir: Path, prepared_dir: Path, split: Path, name: str, size: int, limit: int,
                 truth: Truth) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Up to `limit` images of one split (sorted by id) with their true hue, shape and pattern indexes."""
    ids, pixels, _ = read_split(tables_dir, prepared_dir, split, name, size, Counter())
    ids, pixels = ids[:limit], pixels[:limit]
    attrs = pl.DataFrame({"image_id": ids}).join(truth.images, on="image_id", how="left", maintain_order="left")
    return pixels, *(attrs[a].to_numpy() for a in ("hue", "shape", "pattern"))


@torch.no_grad()
def reconstructions(vq, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Quantised VQ reconstructions in [0, 1], on the CPU whichever device the VQ is on."""
    return torch.cat([((reconstruct(vq, b.to(vq.device))[0].clamp(-1, 1) + 1) / 2).cpu() for b in pixels.split(batch_size)])


def world_quality(vq, oracle: Oracle, cold: tuple, train_pixels: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
    """The stack's quality figures on real images, and the train images' oracle features (the Fréchet reference)."""
    pixels, hue, shape, pattern = cold
    recon = reconstructions(vq, pixels)
    reference, real, rebuilt = oracle.read(train_pixels).features, oracle.read(pixels), oracle.read(recon)
    out = {"vq_psnr_cold": psnr(pixels, recon * 2 - 1), "cold_images": len(pixels), "train_reference_images": len(train_pixels)}
    out |= {f"oracle_{k}_world_cold": v for k, v in accuracy(real, hue, shape, pattern).items()}
    out |= {f"oracle_{k}_vq_reconstructed": v for k, v in accuracy(rebuilt, hue, shape, pattern).items()}
    out["frechet_oracle_cold_vs_train"] = frechet_distance(real.features, reference)  # the floor
    out["frechet_oracle_vq_reconstructed_vs_train"] = frechet_distance(rebuilt.features, reference)
    return out, reference
