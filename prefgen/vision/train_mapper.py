"""Training Step 2's mapper through the training core: D then G on every batch, early stopping on `val` images.

Pure functions over dense rows; the `train_mapper` stage maps ids in and out.
Validation: the mean over segments of the AUC of pref(g, ·) on `val` images
(positives: the val images g interacted with; negatives: the other val images)
— the cold-start protocol of the evaluation, on images no trainer saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from prefgen import checkpoint
from prefgen.metrics.auc import auc
from prefgen.training import core
from prefgen.training.config import TrainerConfig
from prefgen.training.core import History, Loop, Schedule
from prefgen.training.data import epoch_loader
from prefgen.vision.config import TrainMapperConfig
from prefgen.vision.mapper import Discriminator, Generator, discriminator_loss, generator_loss, preference

# Settings that decide how long a run lasts or how fast it goes, not what an epoch computes: a resume may change them.
NOT_IN_RESUME_KEY = ("max_epochs", "patience", "threads", "profile")


@dataclass
class MapperData:
    features: torch.Tensor  # (N, Dv) visual features of train images
    targets: torch.Tensor  # (N, d) Step 1 embeddings e_i of the same images
    p: torch.Tensor  # (S, 2d) Step 1 preference vector of every segment
    project: torch.Tensor  # (d, 2d) Step 1's P
    pairs: np.ndarray  # (n, 2) segment row, train image row
    val_features: torch.Tensor  # (V, Dv)
    val_positives: list[tuple[int, np.ndarray]]  # (segment row, val image rows it interacted with)

    def to(self, device: torch.device) -> MapperData:
        """The same data with its tensors on `device` (pairs and positives stay numpy: they only index)."""
        return replace(self, features=self.features.to(device), targets=self.targets.to(device), p=self.p.to(device),
                       project=self.project.to(device), val_features=self.val_features.to(device))

    def val_rows(self) -> np.ndarray:
        """Rows of the segments validation scores, sorted."""
        return np.array(sorted({s for s, _ in self.val_positives}), dtype=np.int64)


def data_key(data: MapperData) -> str:
    return checkpoint.data_key(data.features, data.targets, data.p, data.val_features, data.pairs)


def mean_segment_auc(scores: np.ndarray, segments: list[tuple[int, np.ndarray]], rows: np.ndarray) -> float:
    """scores (len(rows), V) for segment rows `rows`; AUC per segment with positives and negatives."""
    where = {int(r): k for k, r in enumerate(rows)}
    values = []
    for seg, pos in segments:
        mask = np.zeros(scores.shape[1], dtype=bool)
        mask[pos] = True
        if 0 < mask.sum() < len(mask):
            values.append(auc(scores[where[seg]], mask))
    return float(np.mean(values)) if values else float("nan")


@torch.no_grad()
def validate(g: Generator, d: Discriminator, data: MapperData) -> float:
    """Mean segment AUC of pref(g, ·) on the val images, on the device the models are on."""
    device = next(g.parameters()).device
    rows = data.val_rows()
    p = data.p.to(device)[torch.as_tensor(rows, device=device)]
    scores = preference(g, d, p, data.val_features.to(device)).float().cpu().numpy()
    return mean_segment_auc(scores, data.val_positives, rows)


def frozen(module: nn.Module) -> Callable[..., Tensor]:
    """`module` at its current weights as a function that passes gradients to its inputs only."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return lambda *args: torch.func.functional_call(module, params, args)


def val_auc_schedule(max_epochs: int, seed: int, patience: int) -> Schedule:
    """The schedule of every model judged by validation AUC on MapperData (the mapper, VBPR): keep the best epoch."""
    return Schedule(max_epochs, seed, monitor="val_auc", mode="max", patience=patience, keep="best")


@dataclass
class MapperTask:
    """Step 2's GAN for `core.fit`: modules and optimisers "g" and "d"; each batch updates D, then G against the new D.

    Args:
        data: the train pairs, their features and Step 1 targets, and the val images.
        cfg: the `train_mapper` section (hidden width, α, β, adversarial, lr, batch size, epochs, patience, seed).
    """

    data: MapperData
    cfg: TrainMapperConfig
    name: str = "mapper"
    schedule: Schedule = field(init=False)
    placed: MapperData = field(init=False, repr=False)  # `data` on the device the core trains on

    def __post_init__(self) -> None:
        self.schedule = val_auc_schedule(self.cfg.max_epochs, self.cfg.seed, self.cfg.patience)
        self.placed = self.data

    def modules(self) -> dict[str, nn.Module]:
        torch.manual_seed(self.cfg.seed)
        data, hidden = self.data, self.cfg.hidden
        g = Generator(data.features.mean(0), data.features.std(0), data.targets.shape[1], hidden)
        return {"g": g, "d": Discriminator(data.project, hidden)}

    def optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {name: torch.optim.Adam(modules[name].parameters(), lr=self.cfg.lr, betas=(0.5, 0.999)) for name in ("g", "d")}

    def place(self, device: torch.device) -> None:
        self.placed = self.data.to(device)

    def batches(self, epoch: int) -> DataLoader:
        return epoch_loader(TensorDataset(torch.as_tensor(self.data.pairs)), self.cfg.batch_size, self.cfg.seed, epoch)

    def step(self, batch: list[Tensor], loop: Loop) -> dict[str, float]:
        (pairs,) = batch
        data, cfg, g, d = self.placed, self.cfg, loop.modules["g"], loop.modules["d"]
        negatives = torch.randint(0, len(data.features), (len(pairs),), generator=loop.generator).to(loop.device)
        p, e_pos, e_neg = data.p[pairs[:, 0]], data.targets[pairs[:, 1]], data.targets[negatives]
        fake = g(data.features[pairs[:, 1]])
        loss_d = discriminator_loss(d, p, e_pos, e_neg, fake, cfg.bpr_weight, cfg.adversarial)  # detaches fake
        loop.update(loss_d, "d")
        # D at its new weights, frozen: G's loss must leave no gradient on D for D's next step.
        judge = frozen(loop.accelerator.unwrap_model(d))
        loss_g = generator_loss(judge, p, fake, e_pos, cfg.l2_weight, cfg.adversarial)
        loop.update(loss_g, "g")
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}

    def validate(self, modules: dict[str, nn.Module]) -> dict[str, float]:
        return {"val_auc": validate(modules["g"], modules["d"], self.placed)}

    def resume_key(self) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self.cfg).items() if k not in NOT_IN_RESUME_KEY}
        return {"task": self.name, **settings, "data": data_key(self.data)}


def fit(data: MapperData, cfg: TrainMapperConfig, trainer: TrainerConfig, checkpoint_dir: Path | None = None,
        curve: Path | None = None, log: Callable[[str], None] = print) -> tuple[Generator, Discriminator, History]:
    """Train G and D through the core; (G, D) of the epoch with the best validation AUC, on the CPU, and the history."""
    torch.set_num_threads(cfg.threads)
    modules, history = core.fit(MapperTask(data, cfg), trainer, checkpoint_dir, curve, log)
    return modules["g"].to("cpu"), modules["d"].to("cpu"), history
