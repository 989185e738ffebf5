"""The visual-only BPR baseline of Step 2's evaluation, in the manner of VBPR.

    He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit
    Feedback", AAAI 2016:  score(g, i) = θ_g · (E v_i) + β' · v_i

with θ_g a learned factor per segment, E a linear projection of the visual
features and β' a visual bias. VBPR also has item factors; they are dropped
here because cold images have none, which is exactly the setting compared.
Trained with BPR on the same train pairs as the mapper, through the same training
core, early stopping on the same validation AUC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from prefgen.training import core
from prefgen.training.config import TrainerConfig
from prefgen.training.core import Loop, Schedule
from prefgen.training.data import epoch_loader
from prefgen.vision.train_mapper import MapperData, data_key, mean_segment_auc, val_auc_schedule


@dataclass(frozen=True)
class VBPRConfig:
    dim: int = 32  # θ_g and E v size
    lr: float = 0.005
    reg: float = 1e-4  # L2 on the batch's θ_g
    batch_size: int = 1024
    max_epochs: int = 60
    patience: int = 8
    seed: int = 0


class VisualBPR(nn.Module):
    """score(g, i) = θ_g · (E v_i) + β' · v_i of standardised visual features v_i (the module docstring's VBPR)."""

    def __init__(self, n_segments: int, feature_mean: Tensor, feature_std: Tensor, dim: int):
        super().__init__()
        self.register_buffer("feature_mean", feature_mean.float())
        self.register_buffer("feature_std", feature_std.float().clamp_min(1e-6))
        self.theta = nn.Embedding(n_segments, dim)
        nn.init.normal_(self.theta.weight, std=0.1)
        self.project = nn.Linear(len(feature_mean), dim, bias=False)
        self.visual_bias = nn.Linear(len(feature_mean), 1, bias=False)

    def item_side(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(E v, β' v) of standardised features: (n, dim), (n,)."""
        v = (features - self.feature_mean) / self.feature_std
        return self.project(v), self.visual_bias(v).squeeze(-1)

    def forward(self, segments: Tensor, features: Tensor) -> Tensor:
        """Scores of all pairs: (len(segments), len(features))."""
        projected, bias = self.item_side(features)
        return self.theta(segments) @ projected.T + bias[None, :]


class BPRObjective(nn.Module):
    """VisualBPR's training loss as a module's forward, so that the core's placement, autocast and data
    parallelism wrap it: BPR of segments[k] preferring image features positives[k] over negatives[k],
    plus L2 on the batch's θ_g."""

    def __init__(self, model: VisualBPR, reg: float):
        super().__init__()
        self.model, self.reg = model, reg

    def forward(self, segments: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        (pos_side, pos_bias), (neg_side, neg_bias) = self.model.item_side(positives), self.model.item_side(negatives)
        theta = self.model.theta(segments)
        diff = (theta * (pos_side - neg_side)).sum(-1) + pos_bias - neg_bias
        return -F.logsigmoid(diff).mean() + self.reg * theta.pow(2).sum(-1).mean()


@dataclass
class VBPRTask:
    """The baseline for `core.fit`: module "vbpr" (its BPR objective) and its optimiser, uniform negatives,
    kept at its best validation AUC."""

    data: MapperData
    cfg: VBPRConfig
    name: str = "vbpr"
    schedule: Schedule = field(init=False)
    placed: MapperData = field(init=False, repr=False)  # `data` on the device the core trains on

    def __post_init__(self) -> None:
        self.schedule = val_auc_schedule(self.cfg.max_epochs, self.cfg.seed, self.cfg.patience)
        self.placed = self.data

    def modules(self) -> dict[str, nn.Module]:
        torch.manual_seed(self.cfg.seed)
        features = self.data.features
        model = VisualBPR(len(self.data.p), features.mean(0), features.std(0), self.cfg.dim)
        return {"vbpr": BPRObjective(model, self.cfg.reg)}

    def optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"vbpr": torch.optim.Adam(modules["vbpr"].parameters(), lr=self.cfg.lr)}

    def place(self, device: torch.device) -> None:
        self.placed = self.data.to(device)

    def batches(self, epoch: int) -> DataLoader:
        return epoch_loader(TensorDataset(torch.as_tensor(self.data.pairs)), self.cfg.batch_size, self.cfg.seed, epoch)

    def step(self, batch: list[Tensor], loop: Loop) -> dict[str, float]:
        (pairs,) = batch
        features = self.placed.features
        negatives = torch.randint(0, len(features), (len(pairs),), generator=loop.generator).to(loop.device)
        loss = loop.modules["vbpr"](pairs[:, 0], features[pairs[:, 1]], features[negatives])
        loop.update(loss, "vbpr")
        return {"loss": loss.item()}

    def validate(self, modules: dict[str, nn.Module]) -> dict[str, float]:
        rows = self.placed.val_rows()
        model = modules["vbpr"].model
        segments = torch.as_tensor(rows, device=self.placed.val_features.device)
        scores = model(segments, self.placed.val_features).float().cpu().numpy()
        return {"val_auc": mean_segment_auc(scores, self.data.val_positives, rows)}

    def resume_key(self) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self.cfg).items() if k not in ("max_epochs", "patience")}
        return {"task": self.name, **settings, "data": data_key(self.data)}


def fit_vbpr(data: MapperData, cfg: VBPRConfig, trainer: TrainerConfig, log: Callable[[str], None] = print) -> VisualBPR:
    """Train the baseline through the core, in memory (no checkpoint, no curve); the best epoch's model on the CPU."""
    modules, _ = core.fit(VBPRTask(data, cfg), trainer, None, None, log)
    return modules["vbpr"].model.to("cpu")
