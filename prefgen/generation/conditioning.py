"""Step 3.2: the mapping W from Step 1's image space to the text space (METHOD.md 3.2).

The preference embedding e^ = G(v_i) carries a segment's taste for certain topics,
so it is entangled with what an image shows. W projects it into the CLIP text
space, trained so that W(G(v_i)) is close (cosine) to the image's own semantic
feature s_i; the denoiser then receives p~ = W(e^) beside the caption's text
embedding, two conditions in one space rather than one signal counted twice.

    L_W = 1 - cos(W(G(v_i)), s_i)          over the `train` images
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from prefgen import checkpoint
from prefgen.generation.config import TrainWConfig
from prefgen.training.config import TrainerConfig
from prefgen.training.core import History, Loop, Schedule, fit
from prefgen.training.data import epoch_loader


class PreferenceToText(nn.Module):
    """W: (B, d) Step 1 image-space vectors -> (B, text_dim), L2-normalised like CLIP's embeddings.

    Args:
        in_dim (int): d, the size of G's output (Step 1's image embedding).
        text_dim (int): the CLIP embedding size.
        hidden (int, optional): width of the hidden layer. (default: 256)
        mean, std (Tensor, optional): input standardisation, fixed from the train rows.
    """

    def __init__(self, in_dim: int, text_dim: int, hidden: int = 256, mean: Tensor | None = None, std: Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim) if mean is None else mean.clone())
        self.register_buffer("std", torch.ones(in_dim) if std is None else std.clamp_min(1e-6).clone())
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, text_dim))

    def forward(self, e: Tensor) -> Tensor:
        return F.normalize(self.net((e - self.mean) / self.std), dim=-1)


def mean_cosine(pred: Tensor, target: Tensor) -> float:
    return float(F.cosine_similarity(pred, target, dim=-1).mean())


class _Rows(TensorDataset):
    """A TensorDataset that hands over a batch's rows with one index per tensor, not one per row (full batches of
    thousands of rows are W's every epoch)."""

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        return tuple(t[indices] for t in self.tensors)


def _as_batch(rows: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return rows


@dataclass
class WTask:
    """W as a task of the training core (prefgen/training/core.py): full-batch AdamW on L_W, one step an epoch,
    until `patience` epochs pass without a better validation cosine; the best epoch is kept.

    Args:
        cfg (TrainWConfig): the width, optimiser and stopping rule.
        e, s (Tensor): (N, d) train image embeddings G(v_i) and (N, text_dim) their semantic features.
        val_e, val_s (Tensor): the same for the validation images.
    """

    cfg: TrainWConfig
    e: Tensor
    s: Tensor
    val_e: Tensor
    val_s: Tensor
    name: str = "w"

    @property
    def schedule(self) -> Schedule:
        return Schedule(max_epochs=self.cfg.max_epochs, seed=self.cfg.seed, monitor="val_cosine", mode="max",
                        patience=self.cfg.patience, keep="best")

    def modules(self) -> dict[str, nn.Module]:
        torch.manual_seed(self.cfg.seed)
        return {"w": PreferenceToText(self.e.shape[1], self.s.shape[1], self.cfg.hidden, self.e.mean(0), self.e.std(0))}

    def optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"w": torch.optim.AdamW(modules["w"].parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)}

    def place(self, device: torch.device) -> None:
        self.val_e, self.val_s = self.val_e.to(device), self.val_s.to(device)

    def batches(self, epoch: int) -> DataLoader:
        return epoch_loader(_Rows(self.e, self.s), len(self.e), self.cfg.seed, epoch, shuffle=False, collate_fn=_as_batch)

    def step(self, batch: list[Tensor], loop: Loop) -> dict[str, float]:
        e, s = batch
        loss = 1 - F.cosine_similarity(loop.modules["w"](e), s, dim=-1).mean()
        loop.update(loss, "w")
        return {"loss": loss.item()}

    def validate(self, modules: dict[str, nn.Module]) -> dict[str, float]:
        return {"val_cosine": mean_cosine(modules["w"](self.val_e), self.val_s)}

    def resume_key(self) -> dict[str, Any]:
        return {"hidden": self.cfg.hidden, "lr": self.cfg.lr, "weight_decay": self.cfg.weight_decay, "seed": self.cfg.seed,
                "data": checkpoint.data_key(self.e, self.s, self.val_e.cpu(), self.val_s.cpu())}


def fit_w(e: Tensor, s: Tensor, val_e: Tensor, val_s: Tensor, cfg: TrainWConfig, trainer: TrainerConfig = TrainerConfig(),
          log=print) -> tuple[PreferenceToText, History]:
    """Train W through the training core (seconds on a CPU, so without checkpoints); the best epoch's W on the CPU."""
    torch.set_num_threads(cfg.threads)
    modules, history = fit(WTask(cfg, e, s, val_e, val_s), trainer, log=log)
    return modules["w"].to("cpu"), history


def preference_prototype(logits: Tensor, catalogue: Tensor, tau: float = 0.1, prompt_logits: Tensor | None = None) -> Tensor:
    """METHOD.md 3.4: e^_g = sum_i softmax_i(D(p_g, e^_i) / tau) e^_i over the catalogue's mapped images.

    With `prompt_logits` the weights are softmax_i(D(p_g, e^_i) / tau + prompt_logits_i): the product of the
    segment's taste and the prompt's match (CLIP's p(image | prompt)), i.e. the segment's favourites among the
    images that show what the prompt says. The plain prototype averages the segment's favourite images
    whatever they show, so its condition can name a shape the prompt does not.

    Args:
        logits (Tensor): (S, N) D(p_g, e^_i) for S segments and the N catalogue images.
        catalogue (Tensor): (N, d) the mapped image embeddings e^_i = G(v_i).
        tau (float, optional): softmax temperature; small -> the segment's few favourite images. (default: 0.1)
        prompt_logits (Tensor, optional): (N,) or (S, N) log-odds of each image given the prompt. (default: None)
    """
    if logits.shape[1] != len(catalogue):
        raise ValueError(f"logits cover {logits.shape[1]} images but the catalogue has {len(catalogue)}")
    scores = logits / tau if prompt_logits is None else logits / tau + prompt_logits
    return torch.softmax(scores, dim=1) @ catalogue
