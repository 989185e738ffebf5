"""Training Step 1 on individual-image and group-image interactions, early stopping.

The loss (`TrainGraphConfig.loss`): "softmax", the cross-entropy of each
interaction's image against every image of the catalogue under score(g, i), or
"bpr", LightGCN's pairwise loss against one uniform negative; `pairwise_weight`
adds that pairwise term to the softmax loss. After training,
the social smoothing β of encoder.py is chosen on validation among the
configured candidates (0 included by default, so it can only help validation).

Pure functions over dense integer ids; the callers (the `train_graph` stage, the
group-rec benchmark) map their ids in and out. Validation is carved from the
training interactions (one per id with at least two), never from test.
Checkpoints hold weights and optimiser state (safetensors) and a JSON of
config, epoch, metrics and RNG state, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from prefgen import checkpoint
from prefgen.metrics.sampled import tie_aware_metrics
from prefgen.preference import influence
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.encoder import Graphs, SocialPreferenceEncoder


@dataclass
class TrainData:
    n_users: int
    n_items: int
    n_groups: int
    user_items: np.ndarray  # (N, 2) user, item
    group_items: np.ndarray  # (N, 2) group, item
    members: np.ndarray  # (M, 2) group, user
    features: np.ndarray  # (M, F) c_u^g, standardised
    item_features: np.ndarray | None = None  # (n_items, Ds) semantic embedding of each image, if any
    follows: np.ndarray | None = None  # (F, 2) follower, followee user indexes (the social smoothing's graph)
    feature_names: list[str] = field(default_factory=list)  # the F columns of features, by name

    def with_features(self, columns: list[int]) -> TrainData:
        """The same data with only these member feature columns (the influence attention's chosen inputs)."""
        names = [self.feature_names[k] for k in columns] if self.feature_names else []
        return replace(self, features=self.features[:, columns], feature_names=names)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -1.0
    smoothing: float = 0.0  # the chosen social smoothing β
    smoothing_scores: dict[str, float] = field(default_factory=dict)  # validation score per candidate β


def carve_validation(pairs: np.ndarray, rng: np.random.Generator, per_id: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hold out random interactions of each id: per_id[id] of them (default one), always leaving it one to train on.

    per_id lets a caller draw validation the way its test was drawn (CAMRa2011 tests five lines per id). With
    one per id the held rows are each id's first in one random permutation, so the split is the same as before
    per_id existed.
    """
    order = rng.permutation(len(pairs))
    shuffled = pairs[order]
    counts = np.bincount(shuffled[:, 0])
    wanted = np.ones(len(counts), dtype=np.int64)  # ids beyond per_id's length: one, the default
    if per_id is not None:
        wanted[: len(per_id)] = np.asarray(per_id)[: len(counts)]
    by_id = np.argsort(shuffled[:, 0], kind="stable")  # each id's rows in permutation order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(pairs), dtype=np.int64)
    rank[by_id] = np.arange(len(pairs)) - starts[shuffled[by_id, 0]]
    ids = shuffled[:, 0]
    mask = rank < np.minimum(wanted[ids], counts[ids] - 1)
    return shuffled[~mask], shuffled[mask]


def build_graphs(data: TrainData, use_centrality: bool) -> Graphs:
    ui = torch.as_tensor(data.user_items.T.copy())
    ui[1] += data.n_users
    click = torch.cat([ui, ui.flip(0)], dim=1)
    gm = torch.as_tensor(data.members.T.copy())
    gm[1] += data.n_groups
    features = torch.as_tensor(data.features, dtype=torch.float32)
    if not use_centrality:
        features = torch.zeros_like(features)
    items = torch.as_tensor(data.item_features, dtype=torch.float32) if data.item_features is not None else None
    social = None
    if data.follows is not None and len(data.follows):
        follows = torch.as_tensor(data.follows.T.copy())
        social = torch.cat([follows, follows.flip(0)], dim=1)
    return Graphs(click, torch.cat([gm, gm.flip(0)], dim=1), torch.as_tensor(data.members[:, 0]),
                  torch.as_tensor(data.members[:, 1]), features, items, social)


def _negatives(rng: np.random.Generator, pairs: np.ndarray, n_items: int) -> np.ndarray:
    """Uniform negatives, resampled where they hit the row's own positive pairs."""
    known = np.unique(pairs[:, 0] * n_items + pairs[:, 1])  # (id, item) as one sorted int64 key
    neg = rng.integers(0, n_items, len(pairs))
    for _ in range(10):
        clash = np.isin(pairs[:, 0] * n_items + neg, known, assume_unique=False)
        if not clash.any():
            break
        neg[clash] = rng.integers(0, n_items, int(clash.sum()))
    return neg


def _loss(model: SocialPreferenceEncoder, p: torch.Tensor, items: torch.Tensor, rows: np.ndarray, neg: np.ndarray,
          reg_nodes: torch.Tensor, cfg: TrainGraphConfig) -> torch.Tensor:
    """The configured ranking loss of (segment, image) rows, plus LightGCN's L2 on the batch's initial embeddings."""
    seg, pos = torch.as_tensor(rows[:, 0]), torch.as_tensor(rows[:, 1])
    if cfg.loss == "bpr":
        pos_score, neg_score = model.score(p[seg], items[pos]), model.score(p[seg], items[torch.as_tensor(neg)])
        return model.click_gcn.recommendation_loss(pos_score, neg_score, node_id=reg_nodes, lambda_reg=cfg.reg)
    logits = model.project(p[seg]) @ items.T
    loss = torch.nn.functional.cross_entropy(logits, pos)
    if cfg.pairwise_weight:  # the logits already hold both scores of each BPR pair; L2 is added once, below
        rows_at = torch.arange(len(rows))
        pos_score, neg_score = logits[rows_at, pos], logits[rows_at, torch.as_tensor(neg)]
        loss = loss + cfg.pairwise_weight * model.click_gcn.recommendation_loss(pos_score, neg_score, lambda_reg=0.0)
    if len(reg_nodes):  # the same penalty as PyG's BPRLoss: lambda * ||E_0[batch]||^2 / batch size
        loss = loss + cfg.reg * model.click_gcn.embedding(reg_nodes).norm(p=2).pow(2) / len(rows)
    return loss


def train_epoch(model, graphs, data: TrainData, optimizer, rng: np.random.Generator, cfg: TrainGraphConfig) -> float:
    model.train()
    user_neg, group_neg = _negatives(rng, data.user_items, data.n_items), _negatives(rng, data.group_items, data.n_items)
    user_order, group_order = rng.permutation(len(data.user_items)), rng.permutation(len(data.group_items))
    n_batches = max(1, int(np.ceil(len(user_order) / cfg.batch_size)))
    group_batch = int(np.ceil(len(group_order) / n_batches))
    total = 0.0
    for b in range(n_batches):
        u = user_order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        g = group_order[b * group_batch : (b + 1) * group_batch]
        emb = model.embeddings(graphs)
        p_groups, p_users, _ = model.segment_vectors(graphs, emb)
        reg_nodes = torch.as_tensor(np.unique(np.concatenate([data.user_items[u, 0], data.user_items[u, 1] + data.n_users])))
        loss = _loss(model, p_users, emb["item"], data.user_items[u], user_neg[u], reg_nodes, cfg)
        if len(g):
            loss = loss + cfg.group_weight * _loss(model, p_groups, emb["item"], data.group_items[g], group_neg[g], reg_nodes[:0], cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / n_batches


@torch.no_grad()
def score_rows(model, graphs, ids: np.ndarray, items: np.ndarray, kind: str) -> np.ndarray:
    """Scores of (id, item) candidates: ids (n,), items (n, m) -> (n, m)."""
    model.eval()
    emb = model.embeddings(graphs)
    p_groups, p_users, _ = model.segment_vectors(graphs, emb)
    p = (p_groups if kind == "group" else p_users)[torch.as_tensor(ids)]
    projected = model.project(p)
    return torch.einsum("nd,nmd->nm", projected, emb["item"][torch.as_tensor(items)]).numpy()


@torch.no_grad()
def score_all(model, graphs, ids: np.ndarray, kind: str) -> np.ndarray:
    """Scores of every item for each id: (n,) -> (n, n_items), for full-ranking evaluation."""
    model.eval()
    emb = model.embeddings(graphs)
    p_groups, p_users, _ = model.segment_vectors(graphs, emb)
    p = (p_groups if kind == "group" else p_users)[torch.as_tensor(ids)]
    return (model.project(p) @ emb["item"].T).numpy()


def validation_candidates(val: dict[str, np.ndarray], n_items: int, cfg: TrainGraphConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fixed per run (seeded apart from training), so epochs are compared on the same rows: (ids, [pos | negatives])."""
    rng = np.random.default_rng([cfg.seed, 1])
    return {kind: (pairs[:, 0], np.concatenate([pairs[:, 1:2], rng.integers(0, n_items, (len(pairs), cfg.eval_negatives))], axis=1))
            for kind, pairs in val.items() if len(pairs)}


def validate(model, graphs, candidates: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    out = {}
    for kind, (ids, items) in candidates.items():
        scores = score_rows(model, graphs, ids, items, kind)
        metrics = tie_aware_metrics(scores[:, 0], scores[:, 1:], ks=(10,))
        out[f"val_{kind}_HR@10"] = metrics["HR@10"]
    out["val_score"] = float(np.mean([v for k, v in out.items() if k.startswith("val_")]))
    return out


def new_model(data: TrainData, cfg: TrainGraphConfig) -> SocialPreferenceEncoder:
    torch.manual_seed(cfg.seed)
    return SocialPreferenceEncoder(data.n_users, data.n_items, data.n_groups, data.features.shape[1], cfg.dim,
                                   cfg.layers, cfg.use_influence, cfg.use_group_graph,
                                   data.item_features.shape[1] if data.item_features is not None else 0, cfg.image_offsets)


def data_key(data: TrainData, val: dict[str, np.ndarray]) -> str:
    """A digest of exactly what is trained on: a checkpoint resumes only on the same data."""
    digest = hashlib.sha256(f"{data.n_users},{data.n_items},{data.n_groups}".encode())
    extra = [a for a in (data.item_features, data.follows) if a is not None]
    for array in (data.user_items, data.group_items, data.members, data.features, *extra, *[val[k] for k in sorted(val)]):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# Settings that act only after the epochs (β's candidates, whether a refit follows): a checkpoint made under
# other values of these is the same training, so it is resumed rather than redone.
AFTER_TRAINING = ("social_smoothing", "refit", "influence_folds", "persuasion_precision")


def training_config(cfg: TrainGraphConfig) -> dict:
    """The part of the config a checkpoint must match to be resumed: everything that shapes the epochs."""
    return {k: v for k, v in asdict(cfg).items() if k not in AFTER_TRAINING}


def save_checkpoint(folder: Path, model, optimizer, history: History, cfg: TrainGraphConfig, rng: np.random.Generator,
                    best: dict, key: str) -> None:
    optim_tensors, optim_meta = checkpoint.optimizer_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | {f"best.{k}": v for k, v in best.items()}
    rng_tensors, rng_meta = checkpoint.rng_state(rng)
    meta = {"config": training_config(cfg), "data_key": key, "epoch": len(history.epochs), "history": asdict(history),
            "optimizer": optim_meta, **rng_meta}
    checkpoint.save(folder, tensors | optim_tensors | rng_tensors, meta)


def load_checkpoint(folder: Path, model, optimizer, cfg: TrainGraphConfig, rng: np.random.Generator, key: str) -> tuple[History, dict] | None:
    found = checkpoint.load_matching(folder, training_config(cfg), key)
    if found is None:
        return None
    tensors, meta = found
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    checkpoint.restore_optimizer(optimizer, tensors, meta["optimizer"])
    checkpoint.restore_rng(tensors, meta, rng)
    return History(**meta["history"]), {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}


def _start(data: TrainData, cfg: TrainGraphConfig):
    """What every training run starts from: its threads, RNG, fresh model, graphs and optimiser."""
    torch.set_num_threads(cfg.threads)
    model = new_model(data, cfg)
    return np.random.default_rng(cfg.seed), model, build_graphs(data, cfg.use_centrality), torch.optim.Adam(model.parameters(), lr=cfg.lr)


def fit(data: TrainData, val: dict[str, np.ndarray], cfg: TrainGraphConfig, checkpoint_dir: Path | None = None,
        log=print) -> tuple[SocialPreferenceEncoder, Graphs, History]:
    """Train with early stopping on validation HR@10; returns the best epoch's model."""
    candidates = validation_candidates(val, data.n_items, cfg)
    if not candidates:  # with nothing to validate on, no epoch would ever count as best: the untrained model came back
        raise ValueError("fit chooses its epoch on validation rows and got none; use train_for for a fixed epoch count")
    rng, model, graphs, optimizer = _start(data, cfg)
    history, best = History(), {k: v.clone() for k, v in model.state_dict().items()}
    key = data_key(data, val)
    resumed = load_checkpoint(checkpoint_dir, model, optimizer, cfg, rng, key) if checkpoint_dir else None
    if resumed:
        history, best = resumed
        log(f"resumed at epoch {len(history.epochs)}")
    while len(history.epochs) < cfg.max_epochs and len(history.epochs) - history.best_epoch <= cfg.patience:
        started = time.perf_counter()
        loss = train_epoch(model, graphs, data, optimizer, rng, cfg)
        metrics = {"epoch": len(history.epochs), "loss": loss, **validate(model, graphs, candidates),
                   "seconds": time.perf_counter() - started}
        history.epochs.append(metrics)
        if metrics["val_score"] > history.best_score:
            history.best_epoch, history.best_score = metrics["epoch"], metrics["val_score"]
            best = {k: v.clone() for k, v in model.state_dict().items()}
        if checkpoint_dir:
            save_checkpoint(checkpoint_dir, model, optimizer, history, cfg, rng, best, key)
        log(f"epoch {metrics['epoch']:3d}  loss {loss:.4f}  val {metrics['val_score']:.4f}  {metrics['seconds']:.1f}s")
    model.load_state_dict(best)
    choose_smoothing(model, graphs, candidates, history, cfg, log)
    return model, graphs, history


def train_for(data: TrainData, cfg: TrainGraphConfig, epochs: int, checkpoint_dir: Path | None = None,
              log=print) -> tuple[SocialPreferenceEncoder, Graphs, History]:
    """A fresh model trained for a fixed number of epochs, with no validation (the refit below); with a
    checkpoint_dir it saves every epoch and a killed run resumes, as `fit` does."""
    rng, model, graphs, optimizer = _start(data, cfg)
    history, key = History(), f"{data_key(data, {})}:{epochs}"  # another epoch count is another run
    resumed = load_checkpoint(checkpoint_dir, model, optimizer, cfg, rng, key) if checkpoint_dir else None
    if resumed:
        history = resumed[0]
        log(f"refit resumed at epoch {len(history.epochs)}")
    while len(history.epochs) < epochs:
        started = time.perf_counter()
        loss = train_epoch(model, graphs, data, optimizer, rng, cfg)
        history.epochs.append({"epoch": len(history.epochs), "loss": loss, "seconds": time.perf_counter() - started})
        if checkpoint_dir:
            save_checkpoint(checkpoint_dir, model, optimizer, history, cfg, rng, {}, key)
        log(f"refit epoch {len(history.epochs) - 1:3d}/{epochs}  loss {loss:.4f}  {history.epochs[-1]['seconds']:.1f}s")
    return model, graphs, history


def refit(every_line: TrainData, cfg: TrainGraphConfig, chosen: History, checkpoint_dir: Path | None = None,
          log=print) -> tuple[SocialPreferenceEncoder, Graphs, History]:
    """Once validation has chosen the epoch count and β (`chosen`, fit's history), a fresh model trained on
    every line, validation's included, for best_epoch + 1 epochs, with that β.

    Why: the held-out lines are evidence the first model never saw, most where validation holds a large share
    of the lines (BENCHMARKS.md, "Step 1 on public group-recommendation data", refit). The price: nothing is
    left to validate it on.
    """
    model, graphs, history = train_for(every_line, cfg, chosen.best_epoch + 1, checkpoint_dir, log)
    model.smoothing.fill_(chosen.smoothing)
    return model, graphs, history


@dataclass
class Trained:
    model: SocialPreferenceEncoder  # the model to export
    graphs: Graphs
    history: History  # the validated training: its epochs, best epoch and β
    final: History  # the refit's epochs when the exported model is the refit (empty otherwise)
    data: TrainData  # what the exported model was trained on, with the feature columns its attention reads
    influence: influence.FeatureChoice | None  # how those columns were chosen (None: not chosen, all of them)


def train_model(data: TrainData, val: dict[str, np.ndarray], every_line: TrainData, cfg: TrainGraphConfig,
                checkpoint_dir: Path | None = None, log=print) -> Trained:
    """Step 1 from its training lines to the model to export, for the stage and the benchmark alike.

    1. `fit` on `data`, the epoch count and β chosen on `val`;
    2. the influence attention's feature columns chosen by cross-validated group clicks over that model's
       tastes, on `every_line` (`data` and `val` together; influence.py);
    3. the model to export: with cfg.refit a fresh model on `every_line` with those columns (`refit`); without,
       the model of 1 if it read the same columns, else `fit` again on them.
    """
    model, graphs, history = fit(data, val, cfg, checkpoint_dir, log)
    choice = choose_influence_features(model, graphs, every_line, cfg, log)
    columns = choice.columns if choice else list(range(data.features.shape[1]))
    if cfg.refit:
        lines = every_line.with_features(columns)
        model, graphs, refitted = refit(lines, cfg, history, checkpoint_dir / "refit" if checkpoint_dir else None, log)
        return Trained(model, graphs, history, refitted, lines, choice)
    if len(columns) < data.features.shape[1]:
        model, graphs, history = fit(data.with_features(columns), val, cfg, checkpoint_dir / "chosen" if checkpoint_dir else None, log)
    return Trained(model, graphs, history, History(), data.with_features(columns), choice)


def choose_influence_features(model, graphs: Graphs, lines: TrainData, cfg: TrainGraphConfig, log=print) -> influence.FeatureChoice | None:
    """influence.select_features over the model's tastes; None where nothing is chosen (no attention, no
    centrality input, no feature column, no group line, or influence_folds 0)."""
    if not (cfg.use_influence and cfg.use_centrality and cfg.influence_folds and lines.features.shape[1] and len(lines.group_items)):
        return None
    model.eval()
    with torch.no_grad():
        emb = model.embeddings(graphs)
        tastes = model.project(model.segment_vectors(graphs, emb)[1])
    names = lines.feature_names or [f"column {k}" for k in range(lines.features.shape[1])]
    choice = influence.select_features(tastes, emb["item"], lines.members, lines.features, lines.group_items, names,
                                       cfg.influence_folds, cfg.persuasion_precision, cfg.seed, log)
    log(f"influence attention reads: {', '.join(choice.names) or 'no feature, persuasiveness only'}")
    return choice


def choose_smoothing(model, graphs: Graphs, candidates, history: History, cfg: TrainGraphConfig, log=print) -> None:
    """Set the model's social smoothing β to the candidate with the best validation score (ties: the smaller β)."""
    if graphs.social is None or not candidates:
        return
    for beta in sorted(cfg.social_smoothing):
        model.smoothing.fill_(beta)
        history.smoothing_scores[str(beta)] = validate(model, graphs, candidates)["val_score"]
    history.smoothing = float(max(sorted(cfg.social_smoothing), key=lambda b: history.smoothing_scores[str(b)]))
    model.smoothing.fill_(history.smoothing)
    log(f"social smoothing: beta {history.smoothing} (validation {history.smoothing_scores})")

