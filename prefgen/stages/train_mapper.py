"""DVC stage `train_mapper`: params.yaml [train_mapper] and [trainer], the visual features, Step 1's outputs and the
train/val interactions -> Step 2's GAN mapper (paths.mapper; its curve in paths.plots, its checkpoint in
paths.checkpoints/mapper)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import mlflow
import numpy as np

from prefgen import tracking
from prefgen.checkpoint import save_tensors_atomic
from prefgen.paths import Paths
from prefgen.training.config import Training, training_section
from prefgen.vision import mapper_data
from prefgen.vision.config import TrainMapperConfig
from prefgen.vision.scorer import CONFIG_FILE, MAPPER_FILE
from prefgen.vision.train_mapper import fit


def load_config(params: dict[str, Any] | None) -> Training[TrainMapperConfig]:
    return training_section(params, TrainMapperConfig, "train_mapper")


def run(cfg: Training[TrainMapperConfig], paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    model_cfg = cfg.model
    step1 = mapper_data.load_step1(paths.graph)
    data, train_ids = mapper_data.load(model_cfg, step1, paths.visual, paths.tables, paths.split)
    g, d, history = fit(data, model_cfg, cfg.trainer, paths.checkpoint_dir("mapper"), paths.curve_file("train_mapper"), log=log)
    out = paths.mapper
    out.mkdir(parents=True, exist_ok=True)
    state = {f"g.{k}": v for k, v in g.state_dict().items()} | {f"d.{k}": v for k, v in d.state_dict().items()}
    save_tensors_atomic(state, out / MAPPER_FILE)
    shape = {"feature_dim": int(data.features.shape[1]), "embedding_dim": int(data.targets.shape[1]),
             "pref_dim": int(data.p.shape[1]), "train_images": len(train_ids), "train_pairs": len(data.pairs)}
    (out / CONFIG_FILE).write_text(json.dumps({"train_mapper": asdict(model_cfg), "shape": shape}, indent=2) + "\n")
    if mlflow.active_run():
        tracking.log_model_artifacts("preference_mapper", state, {"train_mapper": asdict(model_cfg), **shape})
    best = history.epochs[history.best_epoch]
    return {**shape, "best_epoch": history.best_epoch, "epochs": len(history.epochs), "val_auc": best["val_auc"],
            "seconds_per_epoch": float(np.mean([e["seconds"] for e in history.epochs]))}
