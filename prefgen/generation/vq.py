"""Step 3.1: the VQ autoencoder, a diffusers `VQModel` trained on the `train` images (or loaded from a local folder).

    z = E(x),  z_q = nearest codebook entries of z,  x^ = Dz(z_q)
    L = ||x - x^||^2 + ||sg[z] - z_q||^2 + 0.25 ||z - sg[z_q]||^2     (reconstruction + codebook + commitment)

The codebook and commitment terms are diffusers' `VectorQuantizer` loss. Pixels enter
as [-1, 1]. Codes left unused for a whole epoch are restarted on random encoder
outputs (the usual fix for codebook collapse; diffusers has none built in).
The diffusion model works on the unquantised latents `E(x)`; decoding quantises.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import VQModel
from torch import Tensor

from prefgen import checkpoint
from prefgen.generation.config import TrainVQConfig


@dataclass
class VQHistory:
    epochs: list[dict] = field(default_factory=list)


def build_vq(cfg: TrainVQConfig) -> VQModel:
    """A fresh, seeded VQModel of the profile's size."""
    torch.manual_seed(cfg.seed)
    n = len(cfg.block_out_channels)
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                   up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
                   layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                   num_vq_embeddings=cfg.num_vq_embeddings, vq_embed_dim=cfg.latent_channels,
                   norm_num_groups=cfg.norm_num_groups, sample_size=cfg.image_size)


def load_vq(folder: Path) -> VQModel:
    """A VQModel saved with `save_pretrained` in a local folder (safetensors only; never the hub)."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no VQModel here (expected config.json and diffusion_pytorch_model.safetensors)")
    # low_cpu_mem_usage needs `accelerate`, which we do not install; asking for the plain load keeps the log quiet.
    return VQModel.from_pretrained(folder, local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False).eval()


def save_vq(model: VQModel, folder: Path) -> None:
    """save_pretrained into a temporary folder, then swapped in: readers never see half a model."""
    checkpoint.replace_folder(folder, lambda tmp: model.save_pretrained(tmp, safe_serialization=True))


def reconstruct(model: VQModel, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(reconstruction in [-1, 1], codebook + commitment loss, code indices (B, h, w)) of pixels in [0, 1]."""
    h = model.encode(pixels * 2 - 1).latents
    z_q, vq_loss, (_, _, indices) = model.quantize(h)
    return model.decoder(model.post_quant_conv(z_q)), vq_loss, indices.reshape(h.shape[0], -1)


def psnr(pixels: Tensor, recon: Tensor) -> float:
    """Mean PSNR in dB of reconstructions in [-1, 1] against pixels in [0, 1]."""
    mse = ((recon.clamp(-1, 1) + 1) / 2 - pixels).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def codebook_usage(indices: Tensor, size: int) -> dict[str, float]:
    """Share of the K codes used, and the perplexity exp(H) of the code distribution (K at best)."""
    counts = torch.bincount(indices.flatten(), minlength=size).double()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).double().mean()), "codebook_perplexity": float(entropy.exp())}


@torch.no_grad()
def evaluate(model: VQModel, pixels: Tensor, batch_size: int = 64) -> dict[str, float]:
    """Validation PSNR and codebook usage (quantised reconstructions)."""
    model.eval()
    values, codes = [], []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size]
        recon, _, indices = reconstruct(model, batch)
        values.append(psnr(batch, recon) * len(batch)), codes.append(indices)
    return {"psnr": sum(values) / len(pixels), **codebook_usage(torch.cat(codes), model.config.num_vq_embeddings)}


def _restart_dead_codes(model: VQModel, counts: Tensor, latents: Tensor, gen: torch.Generator) -> int:
    """Move codes with zero count onto random encoder outputs of the last batch; returns how many moved."""
    dead = (counts == 0).nonzero().flatten()
    if len(dead):
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        pick = torch.randint(0, len(vectors), (len(dead),), generator=gen)
        model.quantize.embedding.weight.data[dead] = vectors[pick]
    return len(dead)


def train_epoch(model: VQModel, optimizer: torch.optim.Optimizer, pixels: Tensor, cfg: TrainVQConfig, epoch: int) -> dict[str, float]:
    """One pass over the train pixels in a seeded order; a generator per epoch makes resume exact."""
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(pixels), generator=gen)
    counts = torch.zeros(cfg.num_vq_embeddings, dtype=torch.long)
    totals, n_batches = {"loss_recon": 0.0, "loss_vq": 0.0}, math.ceil(len(pixels) / cfg.batch_size)
    for start in range(0, len(pixels), cfg.batch_size):
        batch = pixels[order[start : start + cfg.batch_size]]
        recon, vq_loss, indices = reconstruct(model, batch)
        loss_recon = F.mse_loss(recon, batch * 2 - 1)
        optimizer.zero_grad()
        (loss_recon + vq_loss).backward()
        optimizer.step()
        counts += torch.bincount(indices.flatten(), minlength=cfg.num_vq_embeddings)
        totals["loss_recon"] += loss_recon.item() / n_batches
        totals["loss_vq"] += vq_loss.item() / n_batches
    restarted = 0
    if cfg.restart_dead_codes:
        with torch.no_grad():
            restarted = _restart_dead_codes(model, counts, model.encode(batch * 2 - 1).latents, gen)
    return totals | {"restarted_codes": restarted}


def epoch_lr(cfg: TrainVQConfig, epoch: int) -> float:
    """The learning rate of `epoch`: constant, or cosine from cfg.lr down to cfg.lr / 100 over cfg.epochs."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    floor = cfg.lr / 100
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * epoch / cfg.epochs))


def best_epoch(history: VQHistory) -> int:
    """The epoch with the highest val PSNR (the first of equals)."""
    return max(range(len(history.epochs)), key=lambda e: (history.epochs[e]["val_psnr"], -e))


def _resume(folder: Path, model: VQModel, optimizer: torch.optim.Optimizer, cfg: TrainVQConfig,
            key: str) -> tuple[VQHistory, dict[str, Tensor]] | None:
    found = checkpoint.load_matching(folder, asdict(cfg), key)
    if found is None:
        return None
    tensors, meta = found
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    checkpoint.restore_optimizer(optimizer, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["optimizer"])
    return VQHistory(**meta["history"]), {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}


def _save(folder: Path, model: VQModel, optimizer: torch.optim.Optimizer, cfg: TrainVQConfig, key: str,
          history: VQHistory, best: dict[str, Tensor]) -> None:
    opt_tensors, opt_meta = checkpoint.optimizer_tensors(optimizer)
    tensors = ({f"model.{k}": v for k, v in model.state_dict().items()} | {f"opt.{k}": v for k, v in opt_tensors.items()}
               | {f"best.{k}": v for k, v in best.items()})
    checkpoint.save(folder, tensors, {"config": asdict(cfg), "data_key": key, "epoch": len(history.epochs),
                                      "history": asdict(history), "optimizer": opt_meta})


def fit_vq(pixels: Tensor, val_pixels: Tensor, cfg: TrainVQConfig, checkpoint_dir: Path | None = None,
           log=print) -> tuple[VQModel, VQHistory]:
    """Train for cfg.epochs, validating each epoch; resume from checkpoint_dir after a kill.

    Returns the best val-PSNR epoch's weights when cfg.keep_best, else the last epoch's.
    """
    torch.set_num_threads(cfg.threads)
    model, key = build_vq(cfg), checkpoint.data_key(pixels, val_pixels)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history, best = (_resume(checkpoint_dir, model, optimizer, cfg, key) if checkpoint_dir else None) or (VQHistory(), {})
    if history.epochs:
        log(f"resumed at epoch {len(history.epochs)}")
    while len(history.epochs) < cfg.epochs:
        started, epoch = time.perf_counter(), len(history.epochs)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(cfg, epoch)
        losses = train_epoch(model, optimizer, pixels, cfg, epoch)
        row = {"epoch": epoch, "lr": epoch_lr(cfg, epoch), **losses,
               **{f"val_{k}": v for k, v in evaluate(model, val_pixels).items()}, "seconds": time.perf_counter() - started}
        history.epochs.append(row)
        if best_epoch(history) == epoch:
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if checkpoint_dir:
            _save(checkpoint_dir, model, optimizer, cfg, key, history, best)
        log(f"epoch {epoch:3d}  lr {row['lr']:.2e}  recon {row['loss_recon']:.4f}  vq {row['loss_vq']:.4f}  "
            f"val_psnr {row['val_psnr']:.2f}  usage {row['val_codebook_usage']:.2f}  restarted {row['restarted_codes']}  "
            f"{row['seconds']:.1f}s")
    if cfg.keep_best and best:
        model.load_state_dict(best)
        log(f"kept epoch {best_epoch(history)} (best val_psnr {history.epochs[best_epoch(history)]['val_psnr']:.2f})")
    return model.eval(), history


def mean_seconds(history: VQHistory) -> float:
    return float(np.mean([e["seconds"] for e in history.epochs])) if history.epochs else 0.0
