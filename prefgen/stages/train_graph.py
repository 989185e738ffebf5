"""DVC stage `train_graph`: Step 1 on the pipeline's tables -> data/04_models/graph, metrics, curve, an MLflow run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl

from prefgen import tracking
from prefgen.config import TrainGraphConfig
from prefgen.preference import stage_data
from prefgen.preference.export import write_outputs
from prefgen.preference.train import carve_validation, train_model
from prefgen.stages.common import run_stage


def train(cfg: TrainGraphConfig, log=print) -> dict[str, Any]:
    indexed = stage_data.load_for(cfg)
    rng = np.random.default_rng(cfg.seed)
    data = indexed.data
    every_line = replace(data)
    data.user_items, user_val = carve_validation(data.user_items, rng)
    data.group_items, group_val = carve_validation(data.group_items, rng)
    trained = train_model(data, {"user": user_val, "group": group_val}, every_line, cfg, Path(cfg.checkpoint_dir), log=log)
    model, history = trained.model, trained.history
    choice = trained.influence.as_dict() if trained.influence else {"chosen": trained.data.feature_names, "folds": 0}
    sizes = write_outputs(model, trained.graphs, replace(indexed, data=trained.data), cfg, Path(cfg.out_dir), choice)
    Path(cfg.curve).parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(history.epochs).write_csv(Path(cfg.curve))
    best = history.epochs[history.best_epoch]
    if mlflow.active_run():
        tracking.log_model_artifacts("graph_encoder", dict(model.state_dict()), {"train_graph": cfg.__dict__, **sizes, "influence": choice})
        for row in history.epochs:
            mlflow.log_metrics({"epoch_loss": row["loss"], "epoch_val_score": row["val_score"]}, step=row["epoch"])
    return {**sizes, "items_without_features": indexed.items_without_features,
            "members_without_centrality": indexed.members_without_centrality, "best_epoch": history.best_epoch, "epochs": len(history.epochs),
            "val_score": best["val_score"], "seconds_per_epoch": float(np.mean([e["seconds"] for e in history.epochs])),
            "follows": len(data.follows), "follows_outside": indexed.follows_outside, "social_smoothing": history.smoothing,
            "val_score_smoothed": history.smoothing_scores.get(str(history.smoothing), best["val_score"]),
            "refit_epochs": len(trained.final.epochs), "influence_features": ", ".join(choice["chosen"])}


def run(cfg: TrainGraphConfig, params: dict[str, Any] | None, root: Path) -> dict[str, Any]:
    return run_stage("train_graph", params, root, Path(cfg.metrics) if params else None, lambda: train(cfg))
