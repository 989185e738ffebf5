"""Training Step 2's mapper: G and D alternately, early stopping on `val` images, resumable.

Pure functions over dense rows; the `train_mapper` stage maps ids in and out.
Validation: the mean over segments of the AUC of pref(g, ·) on `val` images
(positives: the val images g interacted with; negatives: the other val images)
— the cold-start protocol of the evaluation, on images no trainer saw.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from prefgen import checkpoint
from prefgen.metrics.ranking import auc
from prefgen.vision.config import TrainMapperConfig
from prefgen.vision.mapper import Discriminator, Generator, discriminator_loss, generator_loss, preference


@dataclass
class MapperData:
    features: torch.Tensor  # (N, Dv) visual features of train images
    targets: torch.Tensor  # (N, d) Step 1 embeddings e_i of the same images
    p: torch.Tensor  # (S, 2d) Step 1 preference vector of every segment
    project: torch.Tensor  # (d, 2d) Step 1's P
    pairs: np.ndarray  # (n, 2) segment row, train image row
    val_features: torch.Tensor  # (V, Dv)
    val_positives: list[tuple[int, np.ndarray]]  # (segment row, val image rows it interacted with)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -1.0


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
    g.eval(), d.eval()
    rows = np.array(sorted({s for s, _ in data.val_positives}), dtype=np.int64)
    scores = preference(g, d, data.p[torch.as_tensor(rows)], data.val_features).numpy()
    return mean_segment_auc(scores, data.val_positives, rows)


def new_models(data: MapperData, cfg: TrainMapperConfig) -> tuple[Generator, Discriminator]:
    torch.manual_seed(cfg.seed)
    g = Generator(data.features.mean(0), data.features.std(0), data.targets.shape[1], cfg.hidden)
    return g, Discriminator(data.project, cfg.hidden)


def train_epoch(g, d, opt_g, opt_d, data: MapperData, rng: np.random.Generator, cfg: TrainMapperConfig) -> dict[str, float]:
    g.train(), d.train()
    order = rng.permutation(len(data.pairs))
    negatives = rng.integers(0, len(data.features), len(data.pairs))
    totals = {"loss_d": 0.0, "loss_g": 0.0}
    n_batches = max(1, int(np.ceil(len(order) / cfg.batch_size)))
    for b in range(n_batches):
        rows = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        seg, img = torch.as_tensor(data.pairs[rows, 0]), torch.as_tensor(data.pairs[rows, 1])
        p, v, e_pos, e_neg = data.p[seg], data.features[img], data.targets[img], data.targets[torch.as_tensor(negatives[rows])]
        loss_d = discriminator_loss(d, p, e_pos, e_neg, g(v), cfg.bpr_weight, cfg.adversarial)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = generator_loss(d, p, g(v), e_pos, cfg.l2_weight, cfg.adversarial)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        totals["loss_d"] += loss_d.item() / n_batches
        totals["loss_g"] += loss_g.item() / n_batches
    return totals


def data_key(data: MapperData) -> str:
    return checkpoint.data_key(data.features, data.targets, data.p, data.val_features, data.pairs)


def _save(folder: Path, g, d, opt_g, opt_d, history: History, cfg, rng, best: dict, key: str) -> None:
    tensors = {f"g.{k}": v for k, v in g.state_dict().items()} | {f"d.{k}": v for k, v in d.state_dict().items()}
    rng_tensors, rng_meta = checkpoint.rng_state(rng)
    tensors |= {f"best.{k}": v for k, v in best.items()} | rng_tensors
    meta: dict = {"config": asdict(cfg), "data_key": key, "epoch": len(history.epochs), "history": asdict(history), **rng_meta}
    for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
        opt_tensors, meta[name] = checkpoint.optimizer_tensors(opt)
        tensors |= {f"{name}.{k}": v for k, v in opt_tensors.items()}
    checkpoint.save(folder, tensors, meta)


def _resume(folder: Path, g, d, opt_g, opt_d, cfg, rng, key: str) -> tuple[History, dict] | None:
    found = checkpoint.load_matching(folder, asdict(cfg), key)
    if found is None:
        return None
    tensors, meta = found
    g.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g.")})
    d.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d.")})
    for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
        checkpoint.restore_optimizer(opt, {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{name}.")}, meta[name])
    checkpoint.restore_rng(tensors, meta, rng)
    return History(**meta["history"]), {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}


def _state(g, d) -> dict[str, torch.Tensor]:
    return {f"g.{k}": v.clone() for k, v in g.state_dict().items()} | {f"d.{k}": v.clone() for k, v in d.state_dict().items()}


def fit(data: MapperData, cfg: TrainMapperConfig, checkpoint_dir: Path | None = None, log=print) -> tuple[Generator, Discriminator, History]:
    """Alternate D and G steps; keep the epoch with the best validation AUC; resume from checkpoint_dir."""
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    g, d = new_models(data, cfg)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    history, best, key = History(), _state(g, d), data_key(data)
    resumed = _resume(checkpoint_dir, g, d, opt_g, opt_d, cfg, rng, key) if checkpoint_dir else None
    if resumed:
        history, best = resumed
        log(f"resumed at epoch {len(history.epochs)}")
    while len(history.epochs) < cfg.max_epochs and len(history.epochs) - history.best_epoch <= cfg.patience:
        started = time.perf_counter()
        losses = train_epoch(g, d, opt_g, opt_d, data, rng, cfg)
        metrics = {"epoch": len(history.epochs), **losses, "val_auc": validate(g, d, data), "seconds": time.perf_counter() - started}
        history.epochs.append(metrics)
        if metrics["val_auc"] > history.best_score:
            history.best_epoch, history.best_score, best = metrics["epoch"], metrics["val_auc"], _state(g, d)
        if checkpoint_dir:
            _save(checkpoint_dir, g, d, opt_g, opt_d, history, cfg, rng, best, key)
        log(f"epoch {metrics['epoch']:3d}  loss_d {losses['loss_d']:.4f}  loss_g {losses['loss_g']:.4f}  "
            f"val_auc {metrics['val_auc']:.4f}  {metrics['seconds']:.1f}s")
    g.load_state_dict({k[2:]: v for k, v in best.items() if k.startswith("g.")})
    d.load_state_dict({k[2:]: v for k, v in best.items() if k.startswith("d.")})
    return g, d, history
