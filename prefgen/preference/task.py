"""Step 1's training task for the core (prefgen/training/core.py): its data, batches, batch loss and validation.

The loss (`TrainGraphConfig.loss`): "softmax", the cross-entropy of each interaction's image against every
image of the catalogue under score(g, i) (above `softmax_full_max_items` images, against `softmax_negatives` k
images drawn once per batch: a sampled softmax, for catalogues too large for a batch x catalogue matrix), or "bpr", LightGCN's pairwise loss
against one uniform negative; `pairwise_weight` adds that pairwise term to the softmax loss. Every batch
propagates the whole click and member graphs, so the embeddings a batch is scored on are the current weights' own.

Pure functions over dense integer ids; the callers (the `train_graph` stage, the group-rec benchmark) map
their ids in and out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from prefgen import checkpoint
from prefgen.metrics.sampled import tie_aware_metrics
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.encoder import Graphs, SocialPreferenceEncoder
from prefgen.training.core import Loop, Schedule


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


def graphs_on(graphs: Graphs, device: torch.device) -> Graphs:
    """A copy of `graphs` with every tensor on `device`."""
    return Graphs(**{name: None if value is None else value.to(device) for name, value in vars(graphs).items()})


def new_model(data: TrainData, cfg: TrainGraphConfig) -> SocialPreferenceEncoder:
    torch.manual_seed(cfg.seed)
    return SocialPreferenceEncoder(data.n_users, data.n_items, data.n_groups, data.features.shape[1], dim=cfg.dim,
                                   layers=cfg.layers, use_influence=cfg.use_influence, use_group_graph=cfg.use_group_graph,
                                   n_item_features=data.item_features.shape[1] if data.item_features is not None else 0,
                                   image_offsets=cfg.image_offsets)


class EpochLines(Dataset):
    """One epoch's lines in batch order: item k is the k-th individual line, and each batch of `batch_size`
    individual lines carries its share of the group lines (all of them over the epoch's batches), spread over the
    batch's items, so that a process taking part of a batch takes the same part of both."""

    def __init__(self, user_lines: Tensor, group_lines: Tensor, batch_size: int):
        self.user, self.group, self.batch_size = user_lines, group_lines, batch_size
        self.group_batch = math.ceil(len(group_lines) / max(1, math.ceil(len(user_lines) / batch_size)))

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        return self.__getitems__([k])

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """(individual lines (B, 2), the group lines these items carry (G, 2)); the DataLoader fetches batches whole."""
        k = torch.as_tensor(indices, dtype=torch.long)
        batch, slot = k // self.batch_size, k % self.batch_size
        size = (len(self.user) - batch * self.batch_size).clamp(max=self.batch_size)
        start = batch * self.group_batch
        count = (len(self.group) - start).clamp(0, self.group_batch)
        low, high = start + slot * count // size, start + (slot + 1) * count // size
        lengths = high - low
        offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        return self.user[k], self.group[torch.repeat_interleave(low, lengths) + offsets]


def _batch_as_fetched(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch  # EpochLines.__getitems__ already returns the batch


def _contains(sorted_keys: Tensor, keys: Tensor) -> Tensor:
    if not len(sorted_keys):
        return torch.zeros_like(keys, dtype=torch.bool)
    return sorted_keys[torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)] == keys


def negatives(rows: Tensor, known: Tensor, n_items: int, loop: Loop) -> Tensor:
    """Uniform negatives from the epoch's generator, redrawn where they hit the row's own positive pairs
    (`known`: sorted id * n_items + item keys)."""
    keys = rows[:, 0] * n_items
    neg = torch.randint(0, n_items, (len(rows),), generator=loop.generator).to(rows.device)
    for _ in range(10):
        clash = _contains(known, keys + neg)
        count = int(clash.sum())
        if not count:
            break
        neg[clash] = torch.randint(0, n_items, (count,), generator=loop.generator).to(rows.device)
    return neg


def sampled_logits(projected: Tensor, items: Tensor, pos: Tensor, shared: Tensor) -> Tensor:
    """Logits of a sampled softmax, (B, k + 1): column 0 each row's positive, then the k `shared` images.

    A shared image that is the row's own positive is masked out (an accidental hit). The logQ correction of
    sampled softmax subtracts log Q(i) from each logit; under uniform sampling Q is the same for every image,
    positive included, so the correction shifts all logits alike and leaves the softmax unchanged: it is dropped.
    """
    pos_logit = (projected * items[pos]).sum(-1, keepdim=True)
    shared_logits = (projected @ items[shared].T).masked_fill(shared[None, :] == pos[:, None], float("-inf"))
    return torch.cat([pos_logit, shared_logits], dim=1)


def _softmax_terms(projected: Tensor, items: Tensor, pos: Tensor, neg: Tensor | None,
                   shared: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(the softmax cross-entropy, the BPR pair's (positive, negative) scores or None without `neg`)."""
    rows_at = torch.arange(len(pos), device=pos.device)
    if shared is None:  # the full softmax: the logits already hold both scores of each BPR pair
        logits = projected @ items.T
        pair = (logits[rows_at, pos], logits[rows_at, neg]) if neg is not None else None
        return torch.nn.functional.cross_entropy(logits, pos), pair
    logits = sampled_logits(projected, items, pos, shared)
    pair = (logits[:, 0], (projected * items[neg]).sum(-1)) if neg is not None else None
    return torch.nn.functional.cross_entropy(logits, torch.zeros_like(pos)), pair


def _loss(model: SocialPreferenceEncoder, p: Tensor, items: Tensor, rows: Tensor, neg: Tensor | None,
          reg_nodes: Tensor, cfg: TrainGraphConfig, shared: Tensor | None = None) -> Tensor:
    """The configured ranking loss of (segment, image) rows, plus LightGCN's L2 on the batch's initial embeddings;
    `shared`: the batch's sampled softmax negatives (None: the full softmax)."""
    seg, pos = rows[:, 0], rows[:, 1]
    if cfg.loss == "bpr":
        pos_score, neg_score = model.score(p[seg], items[pos]), model.score(p[seg], items[neg])
        return model.click_gcn.recommendation_loss(pos_score, neg_score, node_id=reg_nodes, lambda_reg=cfg.reg)
    loss, pair = _softmax_terms(model.project(p[seg]), items, pos, neg if cfg.pairwise_weight else None, shared)
    if pair is not None:  # L2 is added once, below
        loss = loss + cfg.pairwise_weight * model.click_gcn.recommendation_loss(*pair, lambda_reg=0.0)
    if len(reg_nodes):  # the same penalty as PyG's BPRLoss: lambda * ||E_0[batch]||^2 / batch size
        loss = loss + cfg.reg * model.click_gcn.embedding(reg_nodes).norm(p=2).pow(2) / len(rows)
    return loss


def shared_negatives(cfg: TrainGraphConfig, n_items: int, loop: Loop) -> Tensor | None:
    """The batch's sampled softmax negatives, drawn uniformly from the epoch's generator; None for the full softmax
    (softmax_negatives 0, a catalogue of at most softmax_full_max_items images, or one no larger than k)."""
    if cfg.loss != "softmax" or not 0 < cfg.softmax_negatives < n_items or n_items <= cfg.softmax_full_max_items:
        return None
    return torch.randint(0, n_items, (cfg.softmax_negatives,), generator=loop.generator).to(loop.device)


@torch.no_grad()
def score_rows(model, graphs, ids: np.ndarray, items: np.ndarray, kind: str) -> np.ndarray:
    """Scores of (id, item) candidates: ids (n,), items (n, m) -> (n, m); `graphs` on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    with torch.autocast(device.type, enabled=False):  # in full precision: bf16 scores would tie candidates
        emb = model.embeddings(graphs)
        p_groups, p_users, _ = model.segment_vectors(graphs, emb)
        projected = model.project((p_groups if kind == "group" else p_users)[torch.as_tensor(ids, device=device)])
        scores = torch.einsum("nd,nmd->nm", projected, emb["item"][torch.as_tensor(items, device=device)])
    return scores.float().cpu().numpy()


@torch.no_grad()
def score_all(model, graphs, ids: np.ndarray, kind: str) -> np.ndarray:
    """Scores of every item for each id: (n,) -> (n, n_items), for full-ranking evaluation."""
    model.eval()
    device = next(model.parameters()).device
    with torch.autocast(device.type, enabled=False):
        emb = model.embeddings(graphs)
        p_groups, p_users, _ = model.segment_vectors(graphs, emb)
        p = (p_groups if kind == "group" else p_users)[torch.as_tensor(ids, device=device)]
        scores = model.project(p) @ emb["item"].T
    return scores.float().cpu().numpy()


Candidates = dict[str, tuple[np.ndarray, np.ndarray]]


def validation_candidates(val: dict[str, np.ndarray], n_items: int, cfg: TrainGraphConfig) -> Candidates:
    """Fixed per run (seeded apart from training), so epochs are compared on the same rows: (ids, [pos | negatives])."""
    rng = np.random.default_rng([cfg.seed, 1])
    return {kind: (pairs[:, 0], np.concatenate([pairs[:, 1:2], rng.integers(0, n_items, (len(pairs), cfg.eval_negatives))], axis=1))
            for kind, pairs in val.items() if len(pairs)}


def validate(model, graphs, candidates: Candidates) -> dict[str, float]:
    """HR@10 of each kind's validation rows against their sampled negatives, and their mean, `val_score`."""
    out = {}
    for kind, (ids, items) in candidates.items():
        scores = score_rows(model, graphs, ids, items, kind)
        out[f"val_{kind}_HR@10"] = tie_aware_metrics(scores[:, 0], scores[:, 1:], ks=(10,))["HR@10"]
    if out:
        out["val_score"] = float(np.mean(list(out.values())))
    return out


def data_key(data: TrainData, val: dict[str, np.ndarray]) -> str:
    """A digest of exactly what is trained and validated on: a checkpoint resumes only on the same data."""
    extra = [a for a in (data.item_features, data.follows) if a is not None]
    return checkpoint.data_key(np.array([data.n_users, data.n_items, data.n_groups]), data.user_items, data.group_items,
                               data.members, data.features, *extra, *[val[k] for k in sorted(val)])


# Settings that act only after the epochs (β's candidates, whether a refit follows), or only on how many epochs
# run and where: a checkpoint made under other values of these is the same training, resumed (or extended).
NOT_IN_RESUME_KEY = ("social_smoothing", "refit", "influence_folds", "persuasion_precision", "max_epochs", "patience",
                     "threads", "profile")


def training_config(cfg: TrainGraphConfig) -> dict[str, Any]:
    """The part of the config a checkpoint must match to be resumed: everything that shapes an epoch."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_RESUME_KEY}


class EncoderTask:
    """Step 1 as a core task: module "encoder", Adam, the configured ranking loss with the whole graphs propagated on
    every batch; validation HR@10 on `candidates` (none: no validation, as in the refit)."""

    def __init__(self, data: TrainData, val: dict[str, np.ndarray], cfg: TrainGraphConfig, schedule: Schedule, name: str):
        self.data, self.cfg, self.schedule, self.name = data, cfg, schedule, name
        self.candidates = validation_candidates(val, data.n_items, cfg)
        self.graphs = build_graphs(data, cfg.use_centrality)  # on the CPU, for what follows training
        self.placed = self.graphs
        self.user_lines, self.group_lines = torch.as_tensor(data.user_items), torch.as_tensor(data.group_items)
        self.known = {kind: torch.unique(lines[:, 0] * data.n_items + lines[:, 1])
                      for kind, lines in (("user", self.user_lines), ("group", self.group_lines))}
        self._data_key = data_key(data, val)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"encoder": new_model(self.data, self.cfg)}

    def optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"encoder": torch.optim.Adam(modules["encoder"].parameters(), lr=self.cfg.lr)}

    def place(self, device: torch.device) -> None:
        self.placed = graphs_on(self.graphs, device)
        self.known = {kind: keys.to(device) for kind, keys in self.known.items()}

    def batches(self, epoch: int) -> DataLoader:
        """The epoch's individual and group lines, each in an order drawn from (seed, epoch) alone."""
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.cfg.seed, epoch]).generate_state(1)[0]))
        users = self.user_lines[torch.randperm(len(self.user_lines), generator=generator)]
        groups = self.group_lines[torch.randperm(len(self.group_lines), generator=generator)]
        return DataLoader(EpochLines(users, groups, self.cfg.batch_size), batch_size=self.cfg.batch_size, collate_fn=_batch_as_fetched)

    def step(self, batch: tuple[Tensor, Tensor], loop: Loop) -> dict[str, float]:
        user_rows, group_rows = batch
        cfg, n_items = self.cfg, self.data.n_items
        model = loop.accelerator.unwrap_model(loop.modules["encoder"])
        draws = cfg.loss == "bpr" or bool(cfg.pairwise_weight)
        emb, p_groups, p_users = loop.modules["encoder"](self.placed)  # through the wrapper: processes sync their gradients
        with loop.accelerator.autocast():
            reg_nodes = torch.unique(torch.cat([user_rows[:, 0], user_rows[:, 1] + self.data.n_users]))
            user_neg = negatives(user_rows, self.known["user"], n_items, loop) if draws else None
            shared = shared_negatives(cfg, n_items, loop)  # one draw for the individual and group rows alike
            loss = _loss(model, p_users, emb["item"], user_rows, user_neg, reg_nodes, cfg, shared)
            # Every batch uses the group side, even without group rows: data parallelism needs a gradient for every weight.
            group_neg = negatives(group_rows, self.known["group"], n_items, loop) if draws and len(group_rows) else None
            group_loss = (_loss(model, p_groups, emb["item"], group_rows, group_neg, reg_nodes[:0], cfg, shared)
                          if len(group_rows) else 0.0 * p_groups.sum())
            loss = loss + cfg.group_weight * group_loss
        loop.update(loss)
        return {"loss": loss.item()}

    def validate(self, modules: dict[str, torch.nn.Module]) -> dict[str, float]:
        return validate(modules["encoder"], self.placed, self.candidates)

    def resume_key(self) -> dict[str, Any]:
        return {"train_graph": training_config(self.cfg), "data": self._data_key}
