"""DVC stage `train_mapper`: Step 2's GAN mapper -> data/04_models/mapper, metrics, curve, an MLflow run."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl

from prefgen import tracking
from prefgen.checkpoint import save_tensors_atomic
from prefgen.config import TrainMapperConfig
from prefgen.stages.common import run_stage
from prefgen.vision import mapper_data
from prefgen.vision.scorer import CONFIG_FILE, MAPPER_FILE
from prefgen.vision.train_mapper import fit


def train(cfg: TrainMapperConfig, log=print) -> dict[str, Any]:
    data, train_ids = mapper_data.load(cfg)
    g, d, history = fit(data, cfg, Path(cfg.checkpoint_dir), log=log)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {f"g.{k}": v for k, v in g.state_dict().items()} | {f"d.{k}": v for k, v in d.state_dict().items()}
    save_tensors_atomic(state, out / MAPPER_FILE)
    shape = {"feature_dim": int(data.features.shape[1]), "embedding_dim": int(data.targets.shape[1]),
             "pref_dim": int(data.p.shape[1]), "train_images": len(train_ids), "train_pairs": len(data.pairs)}
    (out / CONFIG_FILE).write_text(json.dumps({"train_mapper": asdict(cfg), "shape": shape}, indent=2) + "\n")
    Path(cfg.curve).parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(history.epochs).write_csv(Path(cfg.curve))
    if mlflow.active_run():
        tracking.log_model_artifacts("preference_mapper", state, {"train_mapper": asdict(cfg), **shape})
        for row in history.epochs:
            mlflow.log_metrics({"epoch_loss_d": row["loss_d"], "epoch_loss_g": row["loss_g"], "epoch_val_auc": row["val_auc"]}, step=row["epoch"])
    best = history.epochs[history.best_epoch]
    return {**shape, "best_epoch": history.best_epoch, "epochs": len(history.epochs), "val_auc": best["val_auc"],
            "seconds_per_epoch": float(np.mean([e["seconds"] for e in history.epochs]))}


def run(cfg: TrainMapperConfig, params: dict[str, Any] | None, root: Path) -> dict[str, Any]:
    return run_stage("train_mapper", params, root, Path(cfg.metrics) if params else None, lambda: train(cfg))
