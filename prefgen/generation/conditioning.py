"""Step 3.2: the mapping W from Step 1's image space to the text space (METHOD.md 3.2).

The preference embedding e^ = G(v_i) carries a segment's taste for certain topics,
so it is entangled with what an image shows. W projects it into the CLIP text
space, trained so that W(G(v_i)) is close (cosine) to the image's own semantic
feature s_i; the denoiser then receives p~ = W(e^) beside the caption's text
embedding, two conditions in one space rather than one signal counted twice.

    L_W = 1 - cos(W(G(v_i)), s_i)          over the `train` images
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prefgen.generation.config import TrainWConfig


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


@dataclass
class WHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_cosine: float = -2.0
    seconds: float = 0.0


def mean_cosine(pred: Tensor, target: Tensor) -> float:
    return float(F.cosine_similarity(pred, target, dim=-1).mean())


def fit_w(e: Tensor, s: Tensor, val_e: Tensor, val_s: Tensor, cfg: TrainWConfig, log=print) -> tuple[PreferenceToText, WHistory]:
    """Full-batch Adam on 1 - cos; keeps the epoch with the best validation cosine (seconds on CPU, so no checkpoints)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    w = PreferenceToText(e.shape[1], s.shape[1], cfg.hidden, e.mean(0), e.std(0))
    optimizer = torch.optim.AdamW(w.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, best, started = WHistory(), {k: v.clone() for k, v in w.state_dict().items()}, time.perf_counter()
    while len(history.epochs) < cfg.max_epochs and len(history.epochs) - history.best_epoch <= cfg.patience:
        w.train()
        loss = 1 - F.cosine_similarity(w(e), s, dim=-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            val = mean_cosine(w.eval()(val_e), val_s)
        history.epochs.append({"epoch": len(history.epochs), "loss": loss.item(), "val_cosine": val})
        if val > history.best_val_cosine:
            history.best_epoch, history.best_val_cosine = len(history.epochs) - 1, val
            best = {k: v.clone() for k, v in w.state_dict().items()}
    w.load_state_dict(best)
    history.seconds = time.perf_counter() - started
    log(f"W: {len(history.epochs)} epochs, best val cosine {history.best_val_cosine:.4f} at epoch {history.best_epoch}")
    return w.eval(), history


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
