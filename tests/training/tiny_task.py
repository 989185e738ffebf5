"""A tiny seeded regression task for the core's tests, runnable as a script (under torchrun, or to be killed).

    python -m tests.training.tiny_task OUT.safetensors CHECKPOINT_DIR EPOCHS BATCH [SLEEP_SECONDS [STOCHASTIC]]

STOCHASTIC 0 turns off dropout and input noise, which each process draws from its own generator.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from prefgen.training.config import TrainerConfig
from prefgen.training.core import Schedule, fit
from prefgen.training.data import epoch_loader


def rows(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return x, x @ torch.linspace(-1, 1, 6).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=gen)


@dataclass
class TinyTask:
    """Linear regression with dropout and a noisy input: it uses the core's per-epoch generators both ways."""

    schedule: Schedule
    batch_size: int = 16
    ema_decay: float | None = None
    sleep: float = 0.0  # seconds per batch, so that a kill lands mid-epoch
    stochastic: bool = True
    name: str = "tiny"
    data: tuple[torch.Tensor, torch.Tensor] = field(default_factory=rows)

    @property
    def ema(self) -> dict[str, float]:
        return {"net": self.ema_decay} if self.ema_decay else {}

    def modules(self) -> dict[str, nn.Module]:
        torch.manual_seed(self.schedule.seed)
        return {"net": nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.1 if self.stochastic else 0.0), nn.Linear(8, 1))}

    def optimizers(self, modules):
        return {"net": torch.optim.AdamW(modules["net"].parameters(), lr=0.05)}

    def batches(self, epoch: int):
        return epoch_loader(TensorDataset(*self.data), self.batch_size, self.schedule.seed, epoch)

    def step(self, batch, loop) -> dict[str, float]:
        x, y = batch
        noise = (0.01 if self.stochastic else 0.0) * torch.randn(x.shape, generator=loop.generator).to(loop.device)
        loss = F.mse_loss(loop.modules["net"](x + noise), y)
        loop.update(loss)
        time.sleep(self.sleep)
        return {"loss": loss.item()}

    def validate(self, modules) -> dict[str, float]:
        x, y = rows(32, seed=1)
        return {"val_loss": F.mse_loss(modules["net"](x), y).item()}

    def resume_key(self) -> dict:
        return {"batch_size": self.batch_size, "seed": self.schedule.seed, "ema": self.ema_decay, "stochastic": self.stochastic}


def main(out: str, checkpoint_dir: str, epochs: str, batch: str, sleep: str = "0", stochastic: str = "1") -> None:
    schedule = Schedule(max_epochs=int(epochs), monitor="val_loss", mode="min")
    task = TinyTask(schedule, batch_size=int(batch), sleep=float(sleep), stochastic=stochastic == "1")
    modules, history = fit(task, TrainerConfig(device="cpu"), Path(checkpoint_dir) if checkpoint_dir != "-" else None,
                           log=lambda line: print(line, flush=True))
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        save_file({k: v.contiguous() for k, v in modules["net"].state_dict().items()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
