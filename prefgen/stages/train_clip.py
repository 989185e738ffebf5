"""DVC stage `train_clip`: the semantic image tower on the `train` split's (image, caption) pairs -> data/04_models/clip.

With `checkpoint` set, a pretrained open_clip model is loaded from that local
path instead and saved as the stage output, so later stages read one place.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
import torch

from prefgen.config import TrainClipConfig
from prefgen.stages.common import run_stage
from prefgen.vision import semantic
from prefgen.vision.pixels import read_split


def clip_config(cfg: TrainClipConfig) -> semantic.ClipConfig:
    names = {f.name for f in dataclasses.fields(semantic.ClipConfig)}
    return semantic.ClipConfig(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in names})


def split_images(cfg: TrainClipConfig, split_name: str, skipped: Counter) -> tuple[torch.Tensor, list[str]]:
    """Pixels and captions of one split's images (only that split's: no cold image is read here)."""
    _, pixels, captions = read_split(Path(cfg.tables_dir), Path(cfg.images_dir), Path(cfg.split), split_name, cfg.image_size, skipped)
    return pixels, captions


def train(cfg: TrainClipConfig, log=print) -> dict[str, Any]:
    model_cfg, skipped = clip_config(cfg), Counter()
    if cfg.checkpoint:
        model, history = semantic.build_clip(model_cfg), None
        result: dict[str, Any] = {"pretrained": cfg.checkpoint}
    else:
        images, captions = split_images(cfg, "train", skipped)
        val_images, val_captions = split_images(cfg, "val", skipped)
        model, history = semantic.train_clip(images, captions, val_images, val_captions, model_cfg, Path(cfg.checkpoint_dir), log=log)
        best = history.epochs[history.best_epoch - 1]
        result = {"train_images": len(images), "val_images": len(val_images), "best_epoch": history.best_epoch,
                  "epochs": len(history.epochs), "val_acc": best["val_acc"], "val_loss": best["val_loss"]}
        Path(cfg.curve).parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(history.epochs).write_csv(Path(cfg.curve))
        if mlflow.active_run():
            for row in history.epochs:
                mlflow.log_metrics({"epoch_loss": row["loss"], "epoch_val_acc": row["val_acc"]}, step=int(row["epoch"]))
    semantic.save_model(model, model_cfg, Path(cfg.out_dir))
    if mlflow.active_run():
        mlflow.log_artifacts(cfg.out_dir, artifact_path="clip_tower")
    return result | {"skipped": dict(skipped)}


def run(cfg: TrainClipConfig, params: dict[str, Any] | None, root: Path) -> dict[str, Any]:
    return run_stage("train_clip", params, root, Path(cfg.metrics) if params else None, lambda: train(cfg),
                     not_metrics=("pretrained", "skipped"))
