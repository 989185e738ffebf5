"""Training Step 1 through the core (prefgen/training/core.py): early stopping, the social smoothing, the refit.

`fit` trains the encoder (task.py's `EncoderTask`) with early stopping on validation HR@10 and keeps the best
epoch; after training, the social smoothing β of encoder.py is chosen on validation among the configured
candidates (0 included by default, so it can only help validation). `refit` trains a fresh model on every line
for the chosen number of epochs; `train_model` strings them together with the choice of the influence
attention's member features, for the `train_graph` stage and the group-rec benchmark alike.

Validation is carved from the training interactions (one per id with at least two), never from test. Each
training run checkpoints every epoch in the core's format (its own sub-folder for the refit and for a fit on
chosen features), so a killed run resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from prefgen.preference import influence
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.encoder import Graphs, SocialPreferenceEncoder
from prefgen.preference.task import Candidates, EncoderTask, TrainData, validate
from prefgen.training import core
from prefgen.training.config import TrainerConfig


@dataclass
class History(core.History):
    """The core's history of a Step 1 training, with the social smoothing β that validation chose after it."""

    smoothing: float = 0.0
    smoothing_scores: dict[str, float] = field(default_factory=dict)  # validation score per candidate β


def carve_validation(pairs: np.ndarray, rng: np.random.Generator, per_id: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hold out random interactions of each id: per_id[id] of them (default one), always leaving it one to train on.

    per_id lets a caller draw validation the way its test was drawn (CAMRa2011 tests five lines per id). With
    one per id the held rows are each id's first in one random permutation.
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


def _train(task: EncoderTask, trainer: TrainerConfig, checkpoint_dir: Path | None, curve: Path | None,
           log) -> tuple[SocialPreferenceEncoder, Graphs, History]:
    """The core's fit of `task`; the kept model back on the CPU beside the CPU graphs, for what follows training."""
    torch.set_num_threads(task.cfg.threads)
    modules, history = core.fit(task, trainer, checkpoint_dir, curve, log)
    return modules["encoder"].to("cpu"), task.graphs, History(**asdict(history))


def fit(data: TrainData, val: dict[str, np.ndarray], cfg: TrainGraphConfig, checkpoint_dir: Path | None = None,
        log=print, *, trainer: TrainerConfig = TrainerConfig(), curve: Path | None = None,
        name: str = "graph") -> tuple[SocialPreferenceEncoder, Graphs, History]:
    """Train with early stopping on validation HR@10 (`val_score`); returns the best epoch's model with β chosen."""
    schedule = core.Schedule(cfg.max_epochs, cfg.seed, monitor="val_score", mode="max", patience=cfg.patience, keep="best")
    task = EncoderTask(data, val, cfg, schedule, name)
    if not task.candidates:  # with nothing to validate on, no epoch would ever count as best
        raise ValueError("fit chooses its epoch on validation rows and got none; use train_for for a fixed epoch count")
    model, graphs, history = _train(task, trainer, checkpoint_dir, curve, log)
    choose_smoothing(model, graphs, task.candidates, history, cfg, log)
    return model, graphs, history


def train_for(data: TrainData, cfg: TrainGraphConfig, epochs: int, checkpoint_dir: Path | None = None, log=print, *,
              trainer: TrainerConfig = TrainerConfig(), name: str = "graph_refit") -> tuple[SocialPreferenceEncoder, Graphs, History]:
    """A fresh model trained for a fixed number of epochs, with no validation (the refit below), keeping the last;
    a checkpoint of fewer epochs of the same run is resumed and extended."""
    task = EncoderTask(data, {}, cfg, core.Schedule(epochs, cfg.seed, keep="last"), name)
    return _train(task, trainer, checkpoint_dir, None, log)


def refit(every_line: TrainData, cfg: TrainGraphConfig, chosen: History, checkpoint_dir: Path | None = None,
          log=print, *, trainer: TrainerConfig = TrainerConfig()) -> tuple[SocialPreferenceEncoder, Graphs, History]:
    """Once validation has chosen the epoch count and β (`chosen`, fit's history), a fresh model trained on
    every line, validation's included, for best_epoch + 1 epochs, with that β.

    Why: the held-out lines are evidence the first model never saw, most where validation holds a large share
    of the lines (BENCHMARKS.md, "Step 1 on public group-recommendation data", refit). The price: nothing is
    left to validate it on.
    """
    model, graphs, history = train_for(every_line, cfg, chosen.best_epoch + 1, checkpoint_dir, log, trainer=trainer)
    model.smoothing.fill_(chosen.smoothing)
    return model, graphs, history


@dataclass
class Trained:
    model: SocialPreferenceEncoder  # the model to export, on the CPU
    graphs: Graphs  # on the CPU
    history: History  # the validated training: its epochs, best epoch (0-based) and β
    final: History  # the refit's epochs when the exported model is the refit (empty otherwise)
    data: TrainData  # what the exported model was trained on, with the feature columns its attention reads
    influence: influence.FeatureChoice | None  # how those columns were chosen (None: not chosen, all of them)


def train_model(data: TrainData, val: dict[str, np.ndarray], every_line: TrainData, cfg: TrainGraphConfig,
                checkpoint_dir: Path | None = None, log=print, *, trainer: TrainerConfig = TrainerConfig(),
                curve: Path | None = None) -> Trained:
    """Step 1 from its training lines to the model to export, for the stage and the benchmark alike.

    1. `fit` on `data`, the epoch count and β chosen on `val`;
    2. the influence attention's feature columns chosen by cross-validated group clicks over that model's
       tastes, on `every_line` (`data` and `val` together; influence.py);
    3. the model to export: with cfg.refit a fresh model on `every_line` with those columns (`refit`, in
       checkpoint_dir/refit); without, the model of 1 if it read the same columns, else `fit` again on them
       (in checkpoint_dir/chosen, its epochs then the ones `curve` shows).
    """
    model, graphs, history = fit(data, val, cfg, checkpoint_dir, log, trainer=trainer, curve=curve)
    choice = choose_influence_features(model, graphs, every_line, cfg, log)
    columns = choice.columns if choice else list(range(data.features.shape[1]))
    if cfg.refit:
        lines = every_line.with_features(columns)
        model, graphs, refitted = refit(lines, cfg, history, checkpoint_dir / "refit" if checkpoint_dir else None, log, trainer=trainer)
        return Trained(model, graphs, history, refitted, lines, choice)
    if len(columns) < data.features.shape[1]:
        model, graphs, history = fit(data.with_features(columns), val, cfg, checkpoint_dir / "chosen" if checkpoint_dir else None,
                                     log, trainer=trainer, curve=curve, name="graph_chosen")
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


def choose_smoothing(model, graphs: Graphs, candidates: Candidates, history: History, cfg: TrainGraphConfig, log=print) -> None:
    """Set the model's social smoothing β to the candidate with the best validation score (ties: the smaller β)."""
    if graphs.social is None or not candidates:
        return
    for beta in sorted(cfg.social_smoothing):
        model.smoothing.fill_(beta)
        history.smoothing_scores[str(beta)] = validate(model, graphs, candidates)["val_score"]
    history.smoothing = float(max(sorted(cfg.social_smoothing), key=lambda b: history.smoothing_scores[str(b)]))
    model.smoothing.fill_(history.smoothing)
    log(f"social smoothing: beta {history.smoothing} (validation {history.smoothing_scores})")

