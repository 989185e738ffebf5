"""The core's one checkpoint format: every module, optimiser, LR schedule, EMA and grad scaler of a task,
its history and best weights, in one safetensors file plus JSON (prefgen/checkpoint.py writes both atomically).

Tensor keys: `model.<module>.<key>`, `best.<module>.<key>`, `optim.<optimiser>.<n>.<state>`, `ema.<module>.<i>`
and `extra.<key>` (the task's own, e.g. a codebook's usage). Nothing is unpickled on load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefgen import checkpoint

FORMAT_KEY = "core"  # marks a checkpoint written by this module: the old per-trainer ones are not resumed


@dataclass
class Parts:
    """Everything of a task that a checkpoint holds."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, Any]
    schedulers: dict[str, Any]
    emas: dict[str, Any]
    scaler: Any = None  # accelerate's GradScaler under fp16, else None


@dataclass
class Found:
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def history(self) -> dict[str, Any]:
        return self.meta["history"]

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in self.tensors.items() if k.startswith(prefix)}


def _raw(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimiser


def save(folder: Path, parts: Parts, task: Any, history: Any, key: dict[str, Any], best: dict[str, dict[str, torch.Tensor]]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {FORMAT_KEY: True, "config": key, "data_key": "", "epoch": len(history.epochs),
                            "history": asdict(history), "optimizers": {}, "schedulers": {}, "emas": {}}
    for name, module in parts.modules.items():
        tensors |= {f"model.{name}.{k}": v.detach().cpu() for k, v in module.state_dict().items()}
    for name, state in best.items():
        tensors |= {f"best.{name}.{k}": v for k, v in state.items()}
    for name, optimizer in parts.optimizers.items():
        opt_tensors, meta["optimizers"][name] = checkpoint.optimizer_tensors(_raw(optimizer))
        tensors |= {f"optim.{name}.{k}": v.detach().cpu() for k, v in opt_tensors.items()}
    meta["schedulers"] = {name: s.state_dict() for name, s in parts.schedulers.items()}
    for name, ema in parts.emas.items():
        state = ema.state_dict()
        tensors |= {f"ema.{name}.{i}": p.detach().cpu() for i, p in enumerate(state.pop("shadow_params"))}
        meta["emas"][name] = state
    if parts.scaler is not None:
        meta["scaler"] = parts.scaler.state_dict()
    if hasattr(task, "extra_state"):
        tensors |= {f"extra.{k}": v.detach().cpu() for k, v in task.extra_state().items()}
    checkpoint.save(folder, tensors, meta)


def load(folder: Path, key: dict[str, Any]) -> Found | None:
    """The folder's checkpoint when it was written by the core for the same resume key; None otherwise (start afresh)."""
    found = checkpoint.load_matching(folder, key, "")
    if found is None or not found[1].get(FORMAT_KEY):
        return None
    return Found(*found)


def restore(found: Found, parts: Parts, task: Any) -> dict[str, dict[str, torch.Tensor]]:
    """Load a checkpoint into the parts (already on their device); returns the best weights it kept."""
    for name, module in parts.modules.items():
        module.load_state_dict(found.prefixed(f"model.{name}."))
    for name, optimizer in parts.optimizers.items():
        checkpoint.restore_optimizer(_raw(optimizer), found.prefixed(f"optim.{name}."), found.meta["optimizers"][name])
    for name, scheduler in parts.schedulers.items():
        scheduler.load_state_dict(found.meta["schedulers"][name])
    for name, ema in parts.emas.items():
        shadow = found.prefixed(f"ema.{name}.")
        device = next(iter(parts.modules[name].parameters())).device
        ema.load_state_dict(found.meta["emas"][name] | {"shadow_params": [shadow[str(i)].to(device) for i in range(len(shadow))]})
    if parts.scaler is not None and "scaler" in found.meta:
        parts.scaler.load_state_dict(found.meta["scaler"])
    if hasattr(task, "load_extra_state"):
        task.load_extra_state(found.prefixed("extra."))
    best = {name: found.prefixed(f"best.{name}.") for name in parts.modules}
    return {name: state for name, state in best.items() if state}
