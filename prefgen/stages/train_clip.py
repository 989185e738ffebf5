"""DVC stage `train_clip`: params.yaml [train_clip], the `train` split's (image, caption) pairs -> the semantic
image tower (paths.clip; its curve in paths.plots, its checkpoint in paths.checkpoints/clip).

With `checkpoint` set, a pretrained open_clip model is loaded from that local
path instead and saved as the stage output, so later stages read one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import mlflow
import polars as pl
import torch

from prefgen.params import section
from prefgen.paths import Paths
from prefgen.vision import semantic
from prefgen.vision.config import ClipConfig
from prefgen.vision.pixels import read_split


def load_config(params: dict[str, Any] | None) -> ClipConfig:
    return section(params, ClipConfig, "train_clip")


def split_images(cfg: ClipConfig, paths: Paths, split_name: str, skipped: Counter) -> tuple[torch.Tensor, list[str]]:
    """Pixels and captions of one split's images (only that split's: no cold image is read here)."""
    _, pixels, captions = read_split(paths.tables, paths.raw, paths.split, split_name, cfg.image_size, skipped)
    return pixels, captions


def run(cfg: ClipConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    skipped: Counter = Counter()
    if cfg.checkpoint:
        model, history = semantic.build_clip(cfg), None
        result: dict[str, Any] = {"pretrained": cfg.checkpoint}
    else:
        images, captions = split_images(cfg, paths, "train", skipped)
        val_images, val_captions = split_images(cfg, paths, "val", skipped)
        model, history = semantic.train_clip(images, captions, val_images, val_captions, cfg, paths.checkpoint_dir("clip"), log=log)
        best = history.epochs[history.best_epoch - 1]
        result = {"train_images": len(images), "val_images": len(val_images), "best_epoch": history.best_epoch,
                  "epochs": len(history.epochs), "val_acc": best["val_acc"], "val_loss": best["val_loss"]}
        curve = paths.curve_file("train_clip")
        curve.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(history.epochs).write_csv(curve)
        if mlflow.active_run():
            for row in history.epochs:
                mlflow.log_metrics({"epoch_loss": row["loss"], "epoch_val_acc": row["val_acc"]}, step=int(row["epoch"]))
    semantic.save_model(model, cfg, paths.clip)
    if mlflow.active_run():
        mlflow.log_artifacts(str(paths.clip), artifact_path="clip_tower")
    return result | {"skipped": dict(skipped)}
