"""The training core: one loop for every model, on Hugging Face accelerate (https://huggingface.co/docs/accelerate).

A trainer is a `Task`: its modules and optimisers, its batches, its batch loss and its validation.
`fit(task, trainer, checkpoint_dir)` owns the rest: device placement, mixed precision, data-parallel
processes (gloo on CPU, NCCL on GPU, started by `accelerate launch` or `torchrun`), gradient accumulation,
EMA, per-epoch seeds, one checkpoint format with exact resume, early stopping, per-epoch metrics
(MLflow, a CSV for DVC plots) and progress.

The same conventions hold for every model:
- epochs are 0-based; `History.best_epoch` is the epoch whose validation `monitor` was best;
- epoch e draws from generators seeded by (seed, e, rank), so an epoch rerun after a kill draws what
  it drew before, and a longer run's first epochs are a shorter run's;
- a batch from `Task.batches` is the global batch: N processes take 1/N of it each (accelerate's
  split_batches), so N processes at batch B step like one process at B; where B does not divide the
  epoch, the last batch is filled up with the epoch's first rows (accelerate's even_batches), which
  one process does not do.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.state import AcceleratorState, GradientState
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from prefgen.params import ConfigError
from prefgen.training import checkpoints, records
from prefgen.training.config import TrainerConfig

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel


@dataclass(frozen=True)
class Schedule:
    """How long a task trains and which epoch it keeps."""

    max_epochs: int
    seed: int = 0
    monitor: str | None = None  # the validation key compared across epochs; None keeps the last epoch
    mode: Literal["min", "max"] = "max"
    patience: int | None = None  # stop after this many epochs without a better `monitor`; None runs every epoch
    keep: Literal["best", "last"] = "best"


@dataclass
class History:
    """Per-epoch rows (training means, validation, seconds) and the best epoch: saved in every checkpoint."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float | None = None
    world_size: int = 1
    device: str = "cpu"
    mixed_precision: str = "no"

    def kept_epoch(self, schedule: Schedule) -> int:
        return self.best_epoch if schedule.keep == "best" and self.best_epoch >= 0 else len(self.epochs) - 1


class Task(Protocol):
    """What a trainer supplies. Optional hooks: `ema: dict[str, float]` (module -> EMA decay), `place(device)`
    (move the task's own tensors), `schedulers(optimizers)` (stepped after every optimiser step),
    `after_epoch(epoch, loop)` (e.g. a codebook restart), `extra_state()` / `load_extra_state(tensors)`."""

    name: str
    schedule: Schedule

    def modules(self) -> dict[str, nn.Module]: ...  # built on the CPU; the core places them

    def optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]: ...

    def batches(self, epoch: int) -> DataLoader: ...  # this epoch's global batches

    def step(self, batch: Any, loop: Loop) -> dict[str, float]: ...  # the batch loss, applied with loop.update

    def validate(self, modules: dict[str, nn.Module]) -> dict[str, float]: ...

    def resume_key(self) -> dict[str, Any]: ...  # what a checkpoint must match: settings and a digest of the data


class Loop:
    """What `Task.step` sees: the placed (and, across processes, wrapped) modules, this epoch's generators, `update`."""

    def __init__(self, accelerator: Accelerator, modules: dict[str, nn.Module], optimizers: dict[str, Any],
                 schedulers: dict[str, Any], emas: dict[str, EMAModel]):
        self.accelerator, self.modules, self.optimizers = accelerator, modules, optimizers
        self.schedulers, self.emas = schedulers, emas
        self.epoch, self.generator, self.rng = 0, torch.Generator(), np.random.default_rng(0)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def start_epoch(self, seed: int, epoch: int) -> None:
        """Seed every generator from (seed, epoch, rank): what an epoch draws does not depend on what ran before it."""
        self.epoch = epoch
        mixed = np.random.SeedSequence([seed, epoch, self.accelerator.process_index]).generate_state(1)[0]
        torch.manual_seed(int(mixed))
        random.seed(int(mixed))
        self.generator = torch.Generator().manual_seed(int(mixed))  # on the CPU: a seed means the same on every device
        self.rng = np.random.default_rng(int(mixed))

    def update(self, loss: torch.Tensor, *names: str) -> None:
        """Backpropagate `loss` and step optimisers `names` (all when none named); accumulation skips the steps between."""
        self.accelerator.backward(loss)
        for name in names or tuple(self.optimizers):
            self.optimizers[name].step()
            self.optimizers[name].zero_grad(set_to_none=True)
            if self.accelerator.sync_gradients:
                if name in self.schedulers:
                    self.schedulers[name].step()
                for module_name, ema in self.emas.items():
                    if self._optimises(name, module_name):
                        ema.step(self.accelerator.unwrap_model(self.modules[module_name]).parameters())

    def _optimises(self, optimizer: str, module: str) -> bool:
        params = {id(p) for group in self.optimizers[optimizer].param_groups for p in group["params"]}
        return any(id(p) in params for p in self.accelerator.unwrap_model(self.modules[module]).parameters())

    def unwrapped(self) -> dict[str, nn.Module]:
        return {name: self.accelerator.unwrap_model(m) for name, m in self.modules.items()}


def make_accelerator(cfg: TrainerConfig) -> Accelerator:
    """An Accelerator on the device and precision `cfg` asks for; resets accelerate's per-process state first,
    so that one process can train several models with different settings."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params.trainer.device is cuda, but torch sees no CUDA device")
    on_gpu = cfg.device != "cpu" and torch.cuda.is_available()
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "no"
    if precision == "fp16" and not on_gpu:
        raise ConfigError("params.trainer.mixed_precision fp16 needs a CUDA device (the CPU autocasts to bf16 only)")
    AcceleratorState._reset_state(reset_partial_state=False)  # noqa: SLF001 (accelerate keeps one state per process)
    GradientState._reset_state()  # noqa: SLF001
    return Accelerator(cpu=not on_gpu, mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum_steps,
                       step_scheduler_with_optimizer=False)


def fit(task: Task, trainer: TrainerConfig, checkpoint_dir: Path | None = None, curve: Path | None = None,
        log: Callable[[str], None] = print) -> tuple[dict[str, nn.Module], History]:
    """Train `task` to its schedule, resuming from `checkpoint_dir`; (its modules holding the kept weights, history)."""
    accelerator = make_accelerator(trainer)
    loop, history, best = _prepare(task, accelerator, trainer, checkpoint_dir, log)
    key, schedule, to_mlflow = _resume_key(task, accelerator, trainer), task.schedule, records.MlflowEpochs(task.name)
    while len(history.epochs) < schedule.max_epochs and not _patience_spent(schedule, history):
        epoch = len(history.epochs)
        row = _train_epoch(task, loop, epoch) | _validate(task, loop)
        if _improved(schedule, history, row):
            history.best_epoch, history.best_score = epoch, float(row[schedule.monitor])
            best = _best_state(loop, history)
        history.epochs.append(row)
        _after_epoch(task, loop, accelerator, history, key, best, checkpoint_dir, curve, log)
        if accelerator.is_main_process:
            to_mlflow.add(row)
    to_mlflow.flush()
    if curve is not None and accelerator.is_main_process:  # also after resuming a finished run: DVC removed the old one
        records.write_curve(curve, history.epochs)
    _keep(loop, schedule, history, best)
    return {name: m.eval() for name, m in loop.unwrapped().items()}, history


def _prepare(task: Task, accelerator: Accelerator, trainer: TrainerConfig, checkpoint_dir: Path | None,
             log: Callable[[str], None]) -> tuple[Loop, History, dict[str, dict[str, torch.Tensor]]]:
    """Place the modules, build optimisers on the placed weights, resume, then let accelerate wrap them."""
    device = accelerator.device
    modules = {name: m.to(device) for name, m in task.modules().items()}
    if hasattr(task, "place"):
        task.place(device)
    optimizers = task.optimizers(modules)
    schedulers = task.schedulers(optimizers) if hasattr(task, "schedulers") else {}
    emas = _emas(modules, getattr(task, "ema", {}))
    history = History(world_size=accelerator.num_processes, device=device.type, mixed_precision=accelerator.mixed_precision)
    parts = checkpoints.Parts(modules, optimizers, schedulers, emas, getattr(accelerator, "scaler", None))
    found = checkpoints.load(checkpoint_dir, _resume_key(task, accelerator, trainer)) if checkpoint_dir else None
    best: dict[str, dict[str, torch.Tensor]] = {}
    if found is not None and len(found.history["epochs"]) <= task.schedule.max_epochs:  # a longer run is not cut back
        history = History(**found.history)
        best = checkpoints.restore(found, parts, task)
        log(f"{task.name}: resumed after epoch {len(history.epochs) - 1} from {checkpoint_dir}")
    prepared = accelerator.prepare(*modules.values(), *optimizers.values())
    prepared = list(prepared) if isinstance(prepared, tuple) else [prepared]
    wrapped = dict(zip(modules, prepared[: len(modules)], strict=True))
    loop = Loop(accelerator, wrapped, dict(zip(optimizers, prepared[len(modules):], strict=True)), schedulers, emas)
    return loop, history, best


def _emas(modules: dict[str, nn.Module], decays: dict[str, float]) -> dict[str, EMAModel]:
    """diffusers' EMA of each module named in `decays`."""
    if not decays:
        return {}
    from diffusers.training_utils import EMAModel  # importing diffusers takes seconds: only tasks with an EMA pay them

    return {name: EMAModel(modules[name].parameters(), decay=decay) for name, decay in decays.items()}


def _resume_key(task: Task, accelerator: Accelerator, trainer: TrainerConfig) -> dict[str, Any]:
    """A checkpoint resumes only a run of the same settings, data, processes, precision and accumulation."""
    key = task.resume_key() | {"world_size": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
                                "grad_accum_steps": trainer.grad_accum_steps, "device": accelerator.device.type}
    return json.loads(json.dumps(key))  # as the checkpoint's JSON reads it back (tuples become lists)


def _patience_spent(schedule: Schedule, history: History) -> bool:
    return schedule.patience is not None and history.best_epoch >= 0 and \
        len(history.epochs) - 1 - history.best_epoch >= schedule.patience


def _improved(schedule: Schedule, history: History, row: dict[str, float]) -> bool:
    if schedule.monitor is None:
        return False
    if schedule.monitor not in row:
        raise KeyError(f"{type(schedule).__name__}.monitor {schedule.monitor!r} is not among the epoch's metrics {sorted(row)}")
    score = float(row[schedule.monitor])
    if history.best_score is None or math.isnan(history.best_score):
        return not math.isnan(score)
    return score > history.best_score if schedule.mode == "max" else score < history.best_score


def _train_epoch(task: Task, loop: Loop, epoch: int) -> dict[str, float]:
    """One epoch of this process's share of every batch; the means of the step's metrics over all processes."""
    accelerator = loop.accelerator
    loop.start_epoch(task.schedule.seed, epoch)
    for module in loop.modules.values():
        module.train()
    loader = prepare_data_loader(task.batches(epoch), device=accelerator.device, num_processes=accelerator.num_processes,
                                 process_index=accelerator.process_index, split_batches=True, put_on_device=True, rng_types=[])
    sums: dict[str, float] = {}
    started, batches = time.perf_counter(), 0
    for batch in _progress(loader, f"{task.name} epoch {epoch}", accelerator.is_main_process):
        with accelerator.accumulate(*loop.modules.values()):
            for key, value in task.step(batch, loop).items():
                sums[key] = sums.get(key, 0.0) + float(value)
        batches += 1
    totals = accelerator.reduce(torch.tensor([*sums.values(), float(batches)], device=accelerator.device), "sum").cpu()
    if hasattr(task, "after_epoch"):
        task.after_epoch(epoch, loop)
    seconds = time.perf_counter() - started
    means = {key: float(total / totals[-1]) for key, total in zip(sums, totals[:-1], strict=True)}
    return {"epoch": epoch} | means | {"seconds": seconds}


def _progress(loader: DataLoader, desc: str, main: bool) -> Iterator[Any]:
    """Batch counts and time left in a terminal (tqdm hides itself elsewhere; the epoch's log line remains)."""
    return iter(tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if main else True))


@contextmanager
def _ema_weights(loop: Loop) -> Iterator[None]:
    """The EMA weights in place of the training weights while inside."""
    unwrapped = loop.unwrapped()
    for name, ema in loop.emas.items():
        ema.store(unwrapped[name].parameters())
        ema.copy_to(unwrapped[name].parameters())
    try:
        yield
    finally:
        for name, ema in loop.emas.items():
            ema.restore(unwrapped[name].parameters())


@torch.no_grad()
def _validate(task: Task, loop: Loop) -> dict[str, float]:
    """Every process validates the same weights on the whole validation set: they then agree on early stopping."""
    modules = loop.unwrapped()
    for module in modules.values():
        module.eval()
    with _ema_weights(loop), loop.accelerator.autocast():
        return {key: float(value) for key, value in task.validate(modules).items()}


def _best_state(loop: Loop, history: History) -> dict[str, dict[str, torch.Tensor]]:
    """A CPU copy of the weights validation judged (the EMA's where a module keeps one)."""
    with _ema_weights(loop):
        return {name: {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for name, m in loop.unwrapped().items()}


def _after_epoch(task: Task, loop: Loop, accelerator: Accelerator, history: History, key: dict[str, Any],
                 best: dict[str, dict[str, torch.Tensor]], checkpoint_dir: Path | None, curve: Path | None,
                 log: Callable[[str], None]) -> None:
    """Checkpoint, curve and the log line (main process only), then every process waits for it."""
    if accelerator.is_main_process:
        if checkpoint_dir is not None:
            parts = checkpoints.Parts(loop.unwrapped(), loop.optimizers, loop.schedulers, loop.emas, accelerator.scaler)
            checkpoints.save(checkpoint_dir, parts, task, history, key, best)
        if curve is not None:
            records.write_curve(curve, history.epochs)
        log(_epoch_line(task, history))
    accelerator.wait_for_everyone()  # no process runs ahead of the checkpoint it would resume from


def _epoch_line(task: Task, history: History) -> str:
    row, schedule = history.epochs[-1], task.schedule
    shown = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "seconds"))
    left = (schedule.max_epochs - len(history.epochs)) * float(np.mean([r["seconds"] for r in history.epochs]))
    best = f"  best epoch {history.best_epoch}" if schedule.monitor else ""
    return (f"{task.name} epoch {int(row['epoch'])}/{schedule.max_epochs - 1}  {shown}  {row['seconds']:.1f}s{best}  "
            f"at most {left / 60:.1f} min left")


def _keep(loop: Loop, schedule: Schedule, history: History, best: dict[str, dict[str, torch.Tensor]]) -> None:
    """Leave the kept weights in the modules: the best epoch's, or the last epoch's (the EMA's where kept)."""
    unwrapped = loop.unwrapped()
    if schedule.keep == "best" and best:
        for name, module in unwrapped.items():
            module.load_state_dict(best[name])
        return
    for name, ema in loop.emas.items():
        ema.copy_to(unwrapped[name].parameters())
