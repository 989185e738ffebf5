"""DVC stage `train_graph`: Step 1 on the pipeline's tables, split, centrality and visual features -> paths.graph
(its curve in paths.plots, its checkpoint in paths.checkpoints/graph)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import mlflow
import numpy as np

from prefgen import tracking
from prefgen.paths import Paths
from prefgen.preference import stage_data
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.export import write_outputs
from prefgen.preference.train import carve_validation, train_model
from prefgen.training.config import Training, training_section


def load_config(params: dict[str, Any] | None) -> Training[TrainGraphConfig]:
    return training_section(params, TrainGraphConfig, "train_graph")


def run(cfg: Training[TrainGraphConfig], paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    model_cfg = cfg.model
    indexed = stage_data.load_for(model_cfg, paths)
    rng = np.random.default_rng(model_cfg.seed)
    data = indexed.data
    every_line = replace(data)
    data.user_items, user_val = carve_validation(data.user_items, rng)
    data.group_items, group_val = carve_validation(data.group_items, rng)
    trained = train_model(data, {"user": user_val, "group": group_val}, every_line, model_cfg, paths.checkpoint_dir("graph"),
                          log=log, trainer=cfg.trainer, curve=paths.curve_file("train_graph"))
    model, history = trained.model, trained.history
    choice = trained.influence.as_dict() if trained.influence else {"chosen": trained.data.feature_names, "folds": 0}
    sizes = write_outputs(model, trained.graphs, replace(indexed, data=trained.data), model_cfg, paths.graph, choice)
    best = history.epochs[history.best_epoch]
    if mlflow.active_run():
        tracking.log_model_artifacts("graph_encoder", dict(model.state_dict()), {"train_graph": model_cfg.__dict__, **sizes, "influence": choice})
    return {**sizes, "items_without_features": indexed.items_without_features,
            "members_without_centrality": indexed.members_without_centrality, "best_epoch": history.best_epoch, "epochs": len(history.epochs),
            "val_score": best["val_score"], "seconds_per_epoch": float(np.mean([e["seconds"] for e in history.epochs])),
            "follows": len(data.follows), "follows_outside": indexed.follows_outside, "social_smoothing": history.smoothing,
            "val_score_smoothed": history.smoothing_scores.get(str(history.smoothing), best["val_score"]),
            "refit_epochs": len(trained.final.epochs), "influence_features": ", ".join(choice["chosen"])}
