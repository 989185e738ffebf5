"""DVC stage `train_w`: Step 3.2's mapping W (Step 1 image space -> text space) -> paths.w, validation cosine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import mlflow
import torch.nn.functional as F

from prefgen import tracking
from prefgen.atomic import write_json_atomic
from prefgen.checkpoint import save_tensors_atomic
from prefgen.generation import data
from prefgen.generation.conditioning import fit_w, mean_cosine
from prefgen.generation.config import TrainWConfig
from prefgen.paths import Paths
from prefgen.training.config import Training, training_section


def load_config(params: dict[str, Any] | None) -> Training[TrainWConfig]:
    return training_section(params, TrainWConfig, "train_w")


def run(cfg: Training[TrainWConfig], paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    e, s, val_e, val_s = data.w_inputs(paths.mapper, paths.visual, paths.split)
    w, history = fit_w(e, s, val_e, val_s, cfg.model, cfg.trainer, log=log)
    out = paths.w
    out.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(w.state_dict(), out / data.W_FILE)
    shape = {"in_dim": int(e.shape[1]), "text_dim": int(s.shape[1])}
    write_json_atomic(out / data.W_CONFIG, {"train_w": asdict(cfg.model), **shape})
    # The floor W must clear: every image mapped to the mean train semantic feature.
    mean_s = F.normalize(s.mean(0, keepdim=True), dim=-1).expand_as(val_s)
    if mlflow.active_run():
        tracking.log_model_artifacts("w_mapping", w.state_dict(), {"train_w": asdict(cfg.model), **shape})
    return {"val_cosine": history.best_score, "train_cosine": mean_cosine(w(e).detach(), s),
            "val_cosine_mean_baseline": mean_cosine(mean_s, val_s), "best_epoch": history.best_epoch,
            "epochs": len(history.epochs), "train_seconds": sum(row["seconds"] for row in history.epochs),
            "train_images": len(e), "val_images": len(val_e)}
