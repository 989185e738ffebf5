"""Step 3.3 training: eps-prediction on VQ latents, condition dropout, EMA, checkpoints, DDP.

    L = E_{z, eps ~ N(0, I), t} || eps - eps_theta(z_t, t, s, W(e^)) ||^2,   z_t = sqrt(a_t) z + sqrt(1 - a_t) eps

Runs in one process, or unchanged under `torchrun --nproc_per_node N` (gloo on CPU,
NCCL where GPUs are): DDP averages gradients, a DistributedSampler gives each rank
its share of every epoch, rank 0 alone writes checkpoints, and every rank resumes
from the same one. Noise and timesteps come from a generator seeded by
(seed, epoch, rank), so a resumed epoch draws exactly what it would have drawn.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.training_utils import EMAModel
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from prefgen import checkpoint
from prefgen.generation.config import TrainDiffusionConfig
from prefgen.generation.data import DiffusionData
from prefgen.generation.unet import build_noise_scheduler, build_unet, context, drop_conditions


@dataclass
class DiffusionHistory:
    epochs: list[dict] = field(default_factory=list)
    world_size: int = 1
    rank_weight_sha256: list[str] = field(default_factory=list)  # one per rank: DDP must end with one model


def init_distributed() -> tuple[int, int]:
    """(rank, world size): joins the process group when torchrun started several ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_key(data: DiffusionData) -> str:
    return checkpoint.data_key(data.latents, data.text, data.pref, data.val_latents, data.val_text, data.val_pref)


@torch.no_grad()
def validation_loss(unet: UNet2DConditionModel, data: DiffusionData, cfg: TrainDiffusionConfig, batch_size: int = 128) -> float:
    """Mean eps-MSE on the val latents with both conditions, at fixed seeded noise and timesteps (comparable across epochs)."""
    unet.eval()
    gen, scheduler = torch.Generator().manual_seed(cfg.seed + 1), build_noise_scheduler(cfg)
    noise = torch.randn(data.val_latents.shape, generator=gen)
    steps = torch.randint(0, cfg.num_train_timesteps, (len(noise),), generator=gen)
    total = 0.0
    for i in range(0, len(noise), batch_size):
        noisy = scheduler.add_noise(data.val_latents[i : i + batch_size], noise[i : i + batch_size], steps[i : i + batch_size])
        pred = unet(noisy, steps[i : i + batch_size], encoder_hidden_states=context(data.val_text[i : i + batch_size], data.val_pref[i : i + batch_size])).sample
        total += F.mse_loss(pred, noise[i : i + batch_size], reduction="sum").item()
    return total / noise.numel()


def train_epoch(model: torch.nn.Module, ema: EMAModel, optimizer: torch.optim.Optimizer, data: DiffusionData,
                cfg: TrainDiffusionConfig, epoch: int, rank: int, world: int) -> float:
    """One epoch of this rank's share; returns the mean loss over all ranks."""
    model.train()
    sampler = DistributedSampler(range(len(data.latents)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler))
    gen, scheduler = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 1_009 + rank), build_noise_scheduler(cfg)
    per_rank = max(1, cfg.batch_size // world)
    total = torch.zeros(2)  # (sum of batch losses, batches): all-reduced across ranks
    for start in range(0, len(order), per_rank):
        rows = order[start : start + per_rank]
        z0 = data.latents[rows]
        noise = torch.randn(z0.shape, generator=gen)
        steps = torch.randint(0, cfg.num_train_timesteps, (len(rows),), generator=gen)
        text, pref = drop_conditions(data.text[rows], data.pref[rows], cfg.text_dropout, cfg.pref_dropout, gen)
        pred = model(scheduler.add_noise(z0, noise, steps), steps, encoder_hidden_states=context(text, pref)).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.step(_unwrap(model).parameters())
        total += torch.tensor([loss.item(), 1.0])
    if world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def _unwrap(model: torch.nn.Module) -> UNet2DConditionModel:
    return model.module if isinstance(model, DistributedDataParallel) else model


# Settings a checkpoint need not match. The learning rate is constant and every epoch draws from
# (seed, epoch, rank), so a longer run's first epochs are exactly a shorter run's: asking for more
# epochs extends a finished run instead of redoing it.
NOT_IN_CHECKPOINT_KEY = ("epochs",)


def _run_config(cfg: TrainDiffusionConfig, world: int) -> dict:
    """What a checkpoint must match to be resumed: the settings that shape an epoch and the number of ranks (which sets the batches)."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_CHECKPOINT_KEY} | {"world_size": world}


def _save(folder: Path, unet, ema: EMAModel, optimizer, cfg, key: str, history: DiffusionHistory) -> None:
    opt_tensors, opt_meta = checkpoint.optimizer_tensors(optimizer)
    ema_meta = ema.state_dict()
    shadow = ema_meta.pop("shadow_params")
    tensors = ({f"unet.{k}": v for k, v in unet.state_dict().items()} | {f"opt.{k}": v for k, v in opt_tensors.items()}
               | {f"ema.{i}": p for i, p in enumerate(shadow)})
    checkpoint.save(folder, tensors, {"config": _run_config(cfg, history.world_size), "data_key": key, "epoch": len(history.epochs),
                                      "history": asdict(history), "optimizer": opt_meta, "ema": ema_meta})


def _resume(folder: Path, unet, ema: EMAModel, optimizer, cfg, key: str, world: int) -> DiffusionHistory | None:
    found = checkpoint.load_matching(folder, _run_config(cfg, world), key)
    if found is None:
        return None
    tensors, meta = found
    if meta["epoch"] > cfg.epochs:  # a longer run cannot be cut back to a shorter one
        return None
    unet.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unet.")})
    checkpoint.restore_optimizer(optimizer, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["optimizer"])
    shadow = [tensors[f"ema.{i}"] for i in range(len(ema.shadow_params))]
    ema.load_state_dict(meta["ema"] | {"shadow_params": shadow})
    return DiffusionHistory(**meta["history"])


def fit(data: DiffusionData, cfg: TrainDiffusionConfig, checkpoint_dir: Path | None = None,
        log=print) -> tuple[UNet2DConditionModel, DiffusionHistory]:
    """Train for cfg.epochs (resuming from checkpoint_dir); returns the UNet holding the EMA weights."""
    rank, world = init_distributed()
    # cfg.threads is the machine's budget: ranks on one machine share it rather than oversubscribe the cores.
    torch.set_num_threads(max(1, cfg.threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    _, channels, size, _ = data.latents.shape
    unet = build_unet(cfg, channels, size, data.text.shape[1])
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema, key = EMAModel(unet.parameters(), decay=cfg.ema_decay), data_key(data)
    history = (_resume(checkpoint_dir, unet, ema, optimizer, cfg, key, world) if checkpoint_dir else None) or DiffusionHistory(world_size=world)
    if history.epochs:
        log(f"resumed at epoch {len(history.epochs)}")
    model = DistributedDataParallel(unet) if world > 1 else unet
    steps_per_epoch = math.ceil(math.ceil(len(data.latents) / world) / max(1, cfg.batch_size // world))
    while len(history.epochs) < cfg.epochs:
        started, epoch = time.perf_counter(), len(history.epochs)
        loss = train_epoch(model, ema, optimizer, data, cfg, epoch, rank, world)
        seconds = time.perf_counter() - started
        history.epochs.append({"epoch": epoch, "loss": loss, "val_loss": _ema_validation(unet, ema, data, cfg),
                               "seconds": seconds, "samples_per_second": len(data.latents) / seconds, "steps": (epoch + 1) * steps_per_epoch})
        if checkpoint_dir and rank == 0:
            _save(checkpoint_dir, unet, ema, optimizer, cfg, key, history)
        if world > 1:
            dist.barrier()  # no rank runs ahead of the checkpoint it would resume from
        row = history.epochs[-1]
        log(f"epoch {epoch:3d}  loss {loss:.4f}  val_loss(ema) {row['val_loss']:.4f}  {seconds:.1f}s  {row['samples_per_second']:.0f} samples/s")
    history.rank_weight_sha256 = _gather_hashes(unet, world)
    ema.copy_to(unet.parameters())
    return unet.eval(), history


def _ema_validation(unet: UNet2DConditionModel, ema: EMAModel, data: DiffusionData, cfg: TrainDiffusionConfig) -> float:
    """Validation loss of the EMA weights, leaving the training weights in place."""
    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    try:
        return validation_loss(unet, data, cfg)
    finally:
        ema.restore(unet.parameters())


def _gather_hashes(unet: UNet2DConditionModel, world: int) -> list[str]:
    mine = weights_sha256(unet)
    if world == 1:
        return [mine]
    hashes: list[str] = [""] * world
    dist.all_gather_object(hashes, mine)
    return hashes
