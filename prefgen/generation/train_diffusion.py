"""Step 3.3 training: eps-prediction on VQ latents with condition dropout, as a task of the training core.

    L = E_{z, eps ~ N(0, I), t} || eps - eps_theta(z_t, t, s, W(e^)) ||^2,   z_t = sqrt(a_t) z + sqrt(1 - a_t) eps

`prefgen.training.core.fit` runs it: on the CPU or a GPU, in one process or unchanged under
`torchrun --nproc_per_node N` / `accelerate launch` (each process takes 1/N of every global batch),
with the UNet's EMA, per-epoch checkpoints and exact resume. Noise, timesteps and condition dropout
come from the epoch's generator, seeded by (seed, epoch, rank), so a resumed epoch draws what it drew before.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from prefgen import checkpoint
from prefgen.generation.config import TrainDiffusionConfig
from prefgen.generation.unet import build_noise_scheduler, build_unet, context, drop_conditions
from prefgen.training.config import TrainerConfig
from prefgen.training.core import History, Loop, Schedule, fit as fit_task
from prefgen.training.data import epoch_loader


@dataclass
class DiffusionData:
    """What the diffusion trainer reads (prefgen/generation/data.py builds it from latent stores, `tensor_data` from tensors).

    The latents are datasets of `(latent (C, h, w), row)` items, read a batch at a time; `row` picks the image's
    conditions, so a mirror image's latent carries its image's row and shares its conditions.
    """

    latents: Dataset  # unscaled VQ latents of the train images (then of their mirror images)
    text: Tensor  # (n, D) caption embedding of train image `row`
    pref: Tensor  # (n, D) W(G(v)) of train image `row`
    val_latents: Dataset
    val_text: Tensor
    val_pref: Tensor
    scaling_factor: float  # 1 / std of the train latents: what brings them to unit variance
    key: str  # a digest of the latents and conditions: a checkpoint resumes only on the same data


def tensor_data(latents: Tensor, text: Tensor, pref: Tensor, val_latents: Tensor, val_text: Tensor, val_pref: Tensor,
                scaling_factor: float = 1.0) -> DiffusionData:
    """DiffusionData held in memory (small runs and tests). Latent i takes the conditions of row i % len(text), so
    latents of the train images followed by those of their mirror images share their images' conditions."""
    def rows(z: Tensor, conditions: Tensor) -> TensorDataset:
        return TensorDataset(z, torch.arange(len(z)) % len(conditions))
    key = checkpoint.data_key(latents, text, pref, val_latents, val_text, val_pref, torch.tensor([scaling_factor]))
    return DiffusionData(rows(latents, text), text, pref, rows(val_latents, val_text), val_text, val_pref,
                         scaling_factor, key)


# Settings that do not shape an epoch: asking for more epochs extends a finished run instead of redoing it.
NOT_IN_RESUME_KEY = ("epochs", "threads", "profile")


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_weight_sha256(model: nn.Module) -> list[str]:
    """Every process's hash of `model`'s weights, in rank order (one in a single process): data parallelism must end
    with one model. Every process of a process group must call it."""
    mine = weights_sha256(model)
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    hashes: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(hashes, mine)
    return hashes


@torch.no_grad()
def validation_loss(unet: UNet2DConditionModel, data: DiffusionData, cfg: TrainDiffusionConfig, batch_size: int = 128) -> float:
    """Mean eps-MSE on the val latents with both conditions, at fixed seeded noise and timesteps (comparable across
    epochs), streamed in batches and computed on the UNet's device."""
    device, scheduler = next(unet.parameters()).device, build_noise_scheduler(cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    total, count = 0.0, 0
    for z0, rows in DataLoader(data.val_latents, batch_size=batch_size, shuffle=False):
        eps = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, cfg.num_train_timesteps, (len(z0),), generator=gen).to(device)
        noisy = scheduler.add_noise(z0.to(device) * data.scaling_factor, eps, t)
        cond = context(data.val_text[rows], data.val_pref[rows]).to(device)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        total += F.mse_loss(pred.float(), eps.float(), reduction="sum").item()
        count += eps.numel()
    return total / count


@dataclass
class DiffusionTask:
    """The conditioned UNet's eps-prediction on VQ latents: AdamW at a constant rate, an EMA of the weights
    (validated and kept), the last epoch kept."""

    data: DiffusionData
    cfg: TrainDiffusionConfig
    name: str = "diffusion"
    scheduler: DDPMScheduler = field(init=False)
    conditions: tuple[Tensor, Tensor] = field(init=False)  # (text, pref) of the train rows, on the training device

    def __post_init__(self) -> None:
        self.scheduler = build_noise_scheduler(self.cfg)
        self.conditions = (self.data.text, self.data.pref)

    def place(self, device: torch.device) -> None:
        self.conditions = (self.data.text.to(device), self.data.pref.to(device))

    @property
    def schedule(self) -> Schedule:
        return Schedule(max_epochs=self.cfg.epochs, seed=self.cfg.seed, monitor=None, keep="last")

    @property
    def ema(self) -> dict[str, float]:
        return {"unet": self.cfg.ema_decay}

    def modules(self) -> dict[str, nn.Module]:
        channels, size, _ = self.data.latents[0][0].shape
        return {"unet": build_unet(self.cfg, channels, size, self.data.text.shape[1])}

    def optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"unet": torch.optim.AdamW(modules["unet"].parameters(), lr=self.cfg.lr, weight_decay=0.0)}

    def batches(self, epoch: int) -> DataLoader:
        return epoch_loader(self.data.latents, self.cfg.batch_size, self.cfg.seed, epoch)

    def step(self, batch: list[torch.Tensor], loop: Loop) -> dict[str, float]:
        latents, rows = batch
        cfg, n, device = self.cfg, len(latents), loop.device
        z0 = latents * self.data.scaling_factor
        text, pref = (condition[rows] for condition in self.conditions)
        noise = torch.randn(z0.shape, generator=loop.generator).to(device)
        steps = torch.randint(0, cfg.num_train_timesteps, (n,), generator=loop.generator).to(device)
        # Dropout masks drawn on the CPU generator (so a seed means the same on every device), applied on the batch's.
        keep_text, keep_pref = drop_conditions(torch.ones(n, 1), torch.ones(n, 1), cfg.text_dropout, cfg.pref_dropout,
                                               loop.generator)
        cond = context(text * keep_text.to(device), pref * keep_pref.to(device))
        pred = loop.modules["unet"](self.scheduler.add_noise(z0, noise, steps), steps, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loop.update(loss)
        return {"loss": loss.item()}

    def validate(self, modules: dict[str, nn.Module]) -> dict[str, float]:
        return {"val_loss": validation_loss(modules["unet"], self.data, self.cfg)}

    def resume_key(self) -> dict:
        settings = {k: v for k, v in asdict(self.cfg).items() if k not in NOT_IN_RESUME_KEY}
        return settings | {"data": self.data.key}


def fit(data: DiffusionData, cfg: TrainDiffusionConfig, trainer: TrainerConfig = TrainerConfig(),
        checkpoint_dir: Path | None = None, curve: Path | None = None, log=print) -> tuple[UNet2DConditionModel, History]:
    """Train for cfg.epochs (resuming from checkpoint_dir); returns the UNet holding the last epoch's EMA weights,
    on the trainer's device, and the history."""
    # cfg.threads is the machine's budget: processes on one machine share it rather than oversubscribe the cores.
    torch.set_num_threads(max(1, cfg.threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    modules, history = fit_task(DiffusionTask(data, cfg), trainer, checkpoint_dir, curve, log)
    return modules["unet"], history
