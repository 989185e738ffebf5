"""DVC stage `train_clip`: params.yaml [train_clip] and [trainer], the image store's (paths.images) train
(image, caption) pairs, streamed a batch at a time -> the semantic image tower (paths.clip; its curve in
paths.plots, its checkpoint in paths.checkpoints/clip).
Runs unchanged under torchrun: every process trains, and only rank 0 writes outputs and returns metrics.

With `checkpoint` set, a pretrained open_clip model is loaded from that
path instead and saved as the stage output, so later stages read one place.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import mlflow

from prefgen.paths import Paths
from prefgen.training.config import Training, training_section
from prefgen.vision import semantic
from prefgen.vision.config import ClipConfig
from prefgen.vision.image_store import ImageStore


def load_config(params: dict[str, Any] | None) -> Training[ClipConfig]:
    return training_section(params, ClipConfig, "train_clip")


def run(cfg: Training[ClipConfig], paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    model_cfg, skipped = cfg.model, {}
    if model_cfg.checkpoint:
        model = semantic.build_clip(model_cfg)
        result: dict[str, Any] = {"pretrained": model_cfg.checkpoint}
    else:
        store = ImageStore(paths.images, size=model_cfg.image_size)
        images, val_images, skipped = store.dataset("train"), store.dataset("val"), store.manifest["skipped"]
        model, history = semantic.train_clip(images, store.captions("train"), val_images, store.captions("val"),
                                             model_cfg, cfg.trainer, paths.checkpoint_dir("clip"),
                                             curve=paths.curve_file("train_clip"), log=log)
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the other processes train beside rank 0, writing nothing
            return {}
        kept = history.epochs[history.best_epoch]  # best_epoch -1 (no epoch validated to a number): the last, as kept
        result = {"train_images": len(images), "val_images": len(val_images), "best_epoch": history.best_epoch,
                  "epochs": len(history.epochs), "val_acc": kept["val_acc"], "val_loss": kept["val_loss"]}
    semantic.save_model(model, model_cfg, paths.clip)
    if mlflow.active_run():
        mlflow.log_artifacts(str(paths.clip), artifact_path="clip_tower")
    return result | {"skipped": skipped}
