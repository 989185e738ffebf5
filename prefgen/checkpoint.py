"""Resumable training checkpoints: safetensors for tensors, JSON for config, step, metrics and RNG state.

One folder holds one run's latest checkpoint (`checkpoint.safetensors` +
`checkpoint.json`). Both are written to temporary names and renamed, JSON last,
so a kill leaves either the previous checkpoint or the new one, never half of
one. Weights are read with safetensors only (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

TENSORS, META = "checkpoint.safetensors", "checkpoint.json"
FORMAT = 2  # bump when the layout changes: an older checkpoint is then not resumed (start afresh)
_EPOCH = "checkpoint.epoch"  # the epoch of the weights, checked against the metadata's


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read; the message names it."""


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as flat tensors plus its JSON-able param groups and scalar state."""
    tensors, scalars = {}, {}
    for i, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{i}.{name}"] = value
            else:
                scalars[f"{i}.{name}"] = value
    return tensors, {"param_groups": optimizer.state_dict()["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    for key, value in meta["scalars"].items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A safetensors file written to a temporary name and renamed: readers never see half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


def replace_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """`write` fills a temporary sibling folder, which then takes `folder`'s place: readers never see half of one."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def data_key(*arrays: torch.Tensor | np.ndarray) -> str:
    """A digest of exactly what a run trains on, in order: a checkpoint resumes only on the same data."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array.numpy() if torch.is_tensor(array) else array).tobytes())
    return digest.hexdigest()


def save(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Tensors then metadata. A meta["epoch"] is also kept beside the weights, so a kill between the
    two renames (new weights, old metadata) is detected on load instead of half-resumed."""
    folder.mkdir(parents=True, exist_ok=True)
    if "epoch" in meta:
        tensors = tensors | {_EPOCH: torch.tensor(int(meta["epoch"]))}
    save_tensors_atomic(tensors, folder / TENSORS)
    (folder / f".{META}").write_text(json.dumps({"format": FORMAT} | meta, default=int))
    os.replace(folder / f".{META}", folder / META)


def load(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, meta) of the folder's checkpoint, None if there is none; CheckpointError if unreadable."""
    meta_path, tensor_path = folder / META, folder / TENSORS
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path}: corrupt or truncated checkpoint metadata ({err})") from err
    if not tensor_path.is_file():
        raise CheckpointError(f"{tensor_path}: missing beside {meta_path.name}")
    try:
        tensors = load_file(tensor_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{tensor_path}: corrupt or truncated checkpoint ({err})") from err
    epoch = tensors.pop(_EPOCH, None)
    if epoch is not None and int(epoch) != meta.get("epoch"):
        raise CheckpointError(f"{tensor_path}: corrupt or truncated checkpoint "
                              f"(weights of epoch {int(epoch)}, metadata of epoch {meta.get('epoch')})")
    return tensors, meta


def load_matching(folder: Path, config: dict[str, Any], data_key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The folder's checkpoint if it was written in this format, for this config and this data; None
    otherwise (another format, config or data starts afresh rather than mixing runs)."""
    found = load(folder)
    if found is None or found[1].get("format") != FORMAT or found[1].get("config") != config or found[1].get("data_key") != data_key:
        return None
    return found


def rng_state(rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch's and numpy's random state, for an exact resume: (tensors, meta) parts."""
    return {"rng.torch": torch.get_rng_state()}, {"numpy_rng": rng.bit_generator.state}


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any], rng: np.random.Generator) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    rng.bit_generator.state = meta["numpy_rng"]
