"""Step 3.1: the VQ autoencoder, a diffusers `VQModel` trained on the `train` images (or loaded from a local folder).

    z = E(x),  z_q = nearest codebook entries of z,  x^ = Dz(z_q)
    L = ||x - x^||^2 + ||sg[z] - z_q||^2 + 0.25 ||z - sg[z_q]||^2     (reconstruction + codebook + commitment)

The codebook and commitment terms are diffusers' `VectorQuantizer` loss. Pixels enter
as [-1, 1]. Codes left unused for a whole epoch are restarted on random encoder
outputs (the usual fix for codebook collapse; diffusers has none built in).
The diffusion model works on the unquantised latents `E(x)`; decoding quantises.
Images arrive as (image, row) items of a Dataset (an image store's split, streamed a batch at a
time); uint8 images become pixels `image / 255` on the device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import VQModel
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from prefgen import checkpoint
from prefgen.generation.config import TrainVQConfig
from prefgen.training.config import TrainerConfig
from prefgen.training.core import History, Loop, Schedule, fit
from prefgen.training.data import epoch_loader, image_items, items_key, unit_pixels


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
    # The plain load: a model built with its own init, then every weight read in (accelerate's empty-weights path is not needed).
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
    mse = ((recon.float().clamp(-1, 1) + 1) / 2 - pixels.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def codebook_usage(indices: Tensor, size: int) -> dict[str, float]:
    """Share of the K codes used, and the perplexity exp(H) of the code distribution (K at best)."""
    counts = torch.bincount(indices.flatten(), minlength=size).double()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).double().mean()), "codebook_perplexity": float(entropy.exp())}


@torch.no_grad()
def evaluate(model: VQModel, images: Tensor | Dataset, batch_size: int = 64) -> dict[str, float]:
    """Validation PSNR and codebook usage (quantised reconstructions) of images (a tensor or a Dataset of
    (image, row) items), streamed `batch_size` at a time onto the model's device."""
    model.eval()
    device = next(model.parameters()).device
    values, codes, count = [], [], 0
    for batch, _ in DataLoader(image_items(images), batch_size=batch_size, shuffle=False):
        pixels = unit_pixels(batch.to(device))
        recon, _, indices = reconstruct(model, pixels)
        values.append(psnr(pixels, recon) * len(pixels)), codes.append(indices)
        count += len(pixels)
    return {"psnr": sum(values) / count, **codebook_usage(torch.cat(codes).cpu(), model.config.num_vq_embeddings)}


def _restart_dead_codes(model: VQModel, counts: Tensor, latents: Tensor, gen: torch.Generator) -> int:
    """Move codes with zero count onto random encoder outputs of `latents`; returns how many moved."""
    dead = (counts == 0).nonzero().flatten()
    if len(dead):
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        pick = torch.randint(0, len(vectors), (len(dead),), generator=gen).to(vectors.device)
        model.quantize.embedding.weight.data[dead] = vectors[pick]
    return len(dead)


def epoch_lr(cfg: TrainVQConfig, epoch: int) -> float:
    """The learning rate of `epoch`: constant, or cosine from cfg.lr down to cfg.lr / 100 over cfg.epochs."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    floor = cfg.lr / 100
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * epoch / cfg.epochs))


def vq_schedule(cfg: TrainVQConfig) -> Schedule:
    """cfg.epochs epochs, judged by val PSNR; the best epoch kept when cfg.keep_best, else the last."""
    return Schedule(max_epochs=cfg.epochs, seed=cfg.seed, monitor="val_psnr", mode="max",
                    keep="best" if cfg.keep_best else "last")


@dataclass
class VQTask:
    """The VQ autoencoder as a task of the training core (prefgen/training/core.py).

    A step minimises L on a batch of train pixels through the model's `forward` (the one call data
    parallelism wraps); a hook on the quantiser counts the codes each batch picks, and the epoch's end
    restarts the codes no batch picked.

    Args:
        cfg (TrainVQConfig): the model, optimiser and schedule.
        images, val_images (Dataset): train and validation (image, row) items; images uint8 (3, H, W), or
            float pixels in [0, 1].
        grad_accum_steps (int, optional): batches per optimiser step, for the per-epoch rate. (default: 1)
    """

    cfg: TrainVQConfig
    images: Dataset
    val_images: Dataset
    grad_accum_steps: int = 1
    name: str = "vq"
    counts: Tensor | None = field(default=None, init=False, repr=False)  # codes picked since the epoch began
    last_batch: Tensor | None = field(default=None, init=False, repr=False)
    restarted: int = field(default=0, init=False)
    hook: Any = field(default=None, init=False, repr=False)

    @property
    def schedule(self) -> Schedule:
        return vq_schedule(self.cfg)

    def modules(self) -> dict[str, nn.Module]:
        model = build_vq(self.cfg)
        self.hook = model.quantize.register_forward_hook(self._count_codes)
        return {"vq": model}

    def _count_codes(self, module: nn.Module, inputs: Any, output: tuple) -> None:
        if module.training:  # validation's codes are not the epoch's training usage
            picked = torch.bincount(output[2][2].flatten(), minlength=self.cfg.num_vq_embeddings)
            self.counts = picked if self.counts is None else self.counts + picked

    def optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"vq": torch.optim.Adam(modules["vq"].parameters(), lr=self.cfg.lr)}

    def schedulers(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        """epoch_lr, held for every optimiser step of an epoch (the last step of an epoch may take fewer batches)."""
        steps = math.ceil(math.ceil(len(self.images) / self.cfg.batch_size) / self.grad_accum_steps)
        return {"vq": torch.optim.lr_scheduler.LambdaLR(
            optimizers["vq"], lambda step: epoch_lr(self.cfg, step // steps) / self.cfg.lr)}

    def batches(self, epoch: int) -> DataLoader:
        return epoch_loader(self.images, self.cfg.batch_size, self.cfg.seed, epoch)

    def step(self, batch: list[Tensor], loop: Loop) -> dict[str, float]:
        pixels = unit_pixels(batch[0])
        target = pixels * 2 - 1
        lr = loop.optimizers["vq"].param_groups[0]["lr"]
        recon, vq_loss = loop.modules["vq"](target, return_dict=False)
        loss_recon = F.mse_loss(recon, target)
        loop.update(loss_recon + vq_loss, "vq")
        self.last_batch = pixels
        return {"lr": lr, "loss_recon": loss_recon.item(), "loss_vq": vq_loss.item()}

    def after_epoch(self, epoch: int, loop: Loop) -> None:
        """Restart the codes no process picked this epoch on encoder outputs of the epoch's last global batch."""
        counts, self.counts, self.restarted = self.counts, None, 0
        if not self.cfg.restart_dead_codes or counts is None:
            return
        accelerator, model = loop.accelerator, loop.unwrapped()["vq"]
        counts = accelerator.reduce(counts, "sum")
        # Seeded by (seed, epoch) alone, not loop.generator: every process must move the same codes to the same place.
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.cfg.seed, epoch]).generate_state(1)[0]))
        with torch.no_grad():
            latents = model.encode(accelerator.gather(self.last_batch) * 2 - 1).latents
            self.restarted = _restart_dead_codes(model, counts, latents, gen)

    def validate(self, modules: dict[str, nn.Module]) -> dict[str, float]:
        """Val PSNR and codebook usage, and how many codes the epoch's end restarted."""
        scores = evaluate(modules["vq"], self.val_images)
        return {f"val_{key}": value for key, value in scores.items()} | {"restarted_codes": self.restarted}

    def resume_key(self) -> dict[str, Any]:
        """Every setting but the labels, threads and what is kept; epochs only where the cosine rate depends on them."""
        ignored = {"profile", "threads", "pretrained", "keep_best"}
        if self.cfg.lr_schedule == "constant":
            ignored.add("epochs")
        return {k: v for k, v in asdict(self.cfg).items() if k not in ignored} | {"data": self.data_key}

    @cached_property
    def data_key(self) -> str:
        keys = f"{items_key(self.images)}|{items_key(self.val_images)}"
        return checkpoint.data_key(np.frombuffer(keys.encode(), dtype=np.uint8))


def fit_vq(images: Tensor | Dataset, val_images: Tensor | Dataset, cfg: TrainVQConfig,
           trainer: TrainerConfig = TrainerConfig(), checkpoint_dir: Path | None = None, curve: Path | None = None,
           log=print) -> tuple[VQModel, History]:
    """Train for cfg.epochs through the training core on train images (a tensor, or a Dataset of (image, row)
    items such as an image store's split), resuming from checkpoint_dir after a kill.

    Returns the kept epoch's weights on the CPU (the best val-PSNR epoch's when cfg.keep_best, else the
    last's) and the history; `curve` receives the per-epoch CSV.
    """
    torch.set_num_threads(cfg.threads)
    task = VQTask(cfg, image_items(images), image_items(val_images), trainer.grad_accum_steps)
    modules, history = fit(task, trainer, checkpoint_dir, curve, log)
    task.hook.remove()  # the hook holds the task, and with it the last batch
    return modules["vq"].to("cpu"), history


def mean_seconds(history: History) -> float:
    return float(np.mean([e["seconds"] for e in history.epochs])) if history.epochs else 0.0
