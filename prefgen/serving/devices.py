"""Where inference runs: a device choice resolved against the machine, and one device per nightly worker.

    resolve_device("auto")              # "cuda" where torch sees a GPU, else "cpu"
    worker_devices(4, n_gpus=2)         # ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    worker_devices(2, n_gpus=0)         # ["cpu", "cpu"]
    device_for_worker(devices, 3)       # the device of Dask worker 3 of a LocalCluster
    night_devices(nightly_cfg)          # the nightly's workers' devices from params.yaml's `nightly` section

The choice is the trainer's (`auto | cpu | cuda`); asking for cuda where torch sees no GPU is an
error, never a silent CPU run.
"""

from __future__ import annotations

import re
from typing import Literal

import torch

from prefgen.params import ConfigError
from prefgen.serving.config import NightlyConfig

DeviceChoice = Literal["auto", "cpu", "cuda"]
CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def _check(choice: str) -> None:
    if choice not in CHOICES:
        raise ConfigError(f"device {choice!r}: give one of {list(CHOICES)} (or a named GPU such as cuda:1)")


def visible_gpus(choice: str, count: int | None = None) -> int:
    """How many GPUs `choice` may use: none for cpu, every visible one otherwise (`count`, else torch's count);
    ConfigError for cuda where there is none."""
    _check(choice)
    count = torch.cuda.device_count() if count is None else count
    if choice == "cuda" and count == 0:
        raise ConfigError("device cuda was asked for, but torch sees no CUDA device (give auto or cpu)")
    return 0 if choice == "cpu" else count


def resolve_device(choice: str, count: int | None = None) -> str:
    """`choice` as a torch device name on this machine: "cuda" (the current GPU) or "cpu"; a named GPU ("cuda:1",
    as worker_devices deals them) is kept where it exists. `count`: the visible GPUs (default: torch's count)."""
    index = re.fullmatch(r"cuda:(\d+)", choice)
    if index:
        count = torch.cuda.device_count() if count is None else count
        if int(index.group(1)) >= count:
            raise ConfigError(f"device {choice!r} was asked for, but torch sees {count} CUDA device(s)")
        return choice
    return "cuda" if visible_gpus(choice, count) else "cpu"


def worker_devices(n_workers: int, n_gpus: int) -> list[str]:
    """One device per worker: GPUs dealt round robin (each its own where there are as many), else the CPU."""
    if n_workers < 1 or n_gpus < 0:
        raise ValueError(f"need n_workers >= 1 and n_gpus >= 0, got {n_workers} and {n_gpus}")
    return [f"cuda:{k % n_gpus}" for k in range(n_workers)] if n_gpus else ["cpu"] * n_workers


def device_for_worker(devices: list[str], worker_name: object) -> str:
    """The device of the worker named `worker_name`: a LocalCluster names its workers 0, 1, ...; any other name
    (or none: the flow's own process) takes the first device."""
    index = int(worker_name) if isinstance(worker_name, int) or str(worker_name).isdigit() else 0
    return devices[index % len(devices)]


def night_devices(cfg: NightlyConfig, gpus: int | None = None) -> list[str]:
    """The device of each LocalCluster worker of the nightly (of the flow's own process where n_workers is 0), from
    the GPUs this machine has (`gpus`, default torch's count); a running scheduler's workers resolve `cfg.device`
    on their own machines."""
    if cfg.dask.address:
        return [cfg.device]
    return worker_devices(max(cfg.dask.n_workers, 1), visible_gpus(cfg.device, gpus))
