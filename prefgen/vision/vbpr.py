"""The visual-only BPR baseline of Step 2's evaluation, in the manner of VBPR.

    He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit
    Feedback", AAAI 2016:  score(g, i) = θ_g · (E v_i) + β' · v_i

with θ_g a learned factor per segment, E a linear projection of the visual
features and β' a visual bias. VBPR also has item factors; they are dropped
here because cold images have none, which is exactly the setting compared.
Trained with BPR on the same train pairs as the mapper, early stopping on the
same validation AUC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prefgen.vision.train_mapper import MapperData, mean_segment_auc


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


def fit_vbpr(data: MapperData, cfg: VBPRConfig, log=print) -> VisualBPR:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = VisualBPR(len(data.p), data.features.mean(0), data.features.std(0), cfg.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    val_rows = np.array(sorted({s for s, _ in data.val_positives}), dtype=np.int64)
    best, best_auc, best_epoch = {k: v.clone() for k, v in model.state_dict().items()}, -1.0, -1
    for epoch in range(cfg.max_epochs):
        if epoch - best_epoch > cfg.patience:
            break
        order, negatives = rng.permutation(len(data.pairs)), rng.integers(0, len(data.features), len(data.pairs))
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            seg, pos, neg = (torch.as_tensor(a) for a in (data.pairs[rows, 0], data.pairs[rows, 1], negatives[rows]))
            (pos_side, pos_bias), (neg_side, neg_bias) = model.item_side(data.features[pos]), model.item_side(data.features[neg])
            theta = model.theta(seg)
            diff = (theta * (pos_side - neg_side)).sum(-1) + pos_bias - neg_bias
            loss = -F.logsigmoid(diff).mean() + cfg.reg * theta.pow(2).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_auc = mean_segment_auc(model(torch.as_tensor(val_rows), data.val_features).numpy(), data.val_positives, val_rows)
        if val_auc > best_auc:
            best, best_auc, best_epoch = {k: v.clone() for k, v in model.state_dict().items()}, val_auc, epoch
        log(f"vbpr epoch {epoch:3d}  loss {loss.item():.4f}  val_auc {val_auc:.4f}")
    model.load_state_dict(best)
    return model
