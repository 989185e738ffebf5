"""DVC stage `train_vq`: Step 3.1's VQ autoencoder -> paths.vq, PSNR and codebook metrics.

With `pretrained` set, a local diffusers VQModel folder is loaded instead of
training one; it is evaluated on the same `val` images and saved as the output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import polars as pl

from prefgen.generation import vq
from prefgen.generation.config import TrainVQConfig
from prefgen.params import section
from prefgen.paths import Paths
from prefgen.vision.pixels import read_split


def load_config(params: dict[str, Any] | None) -> TrainVQConfig:
    return section(params, TrainVQConfig, "train_vq")


def run(cfg: TrainVQConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    skipped = Counter()
    def pixels(name: str):
        return read_split(paths.tables, paths.raw, paths.split, name, cfg.image_size, skipped)[1]
    train_pixels, val_pixels = pixels("train"), pixels("val")
    if cfg.pretrained:
        model, history = vq.load_vq(Path(cfg.pretrained)), None
        result: dict[str, Any] = {"pretrained": cfg.pretrained}
    else:
        model, history = vq.fit_vq(train_pixels, val_pixels, cfg, paths.checkpoint_dir("vq"), log=log)
        kept = vq.best_epoch(history) if cfg.keep_best else len(history.epochs) - 1
        result = {"epochs": len(history.epochs), "kept_epoch": kept, "seconds_per_epoch": vq.mean_seconds(history),
                  "train_seconds": sum(e["seconds"] for e in history.epochs)}
        curve = paths.curve_file("train_vq")
        curve.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(history.epochs).write_csv(curve)
    scores = vq.evaluate(model, val_pixels)
    vq.save_vq(model, paths.vq)
    if mlflow.active_run():
        mlflow.log_artifacts(str(paths.vq), artifact_path="vq")
        mlflow.log_dict(asdict(cfg), "train_vq_config.json")
        for row in history.epochs if history else []:
            mlflow.log_metrics({"epoch_val_psnr": row["val_psnr"], "epoch_loss_recon": row["loss_recon"]}, step=int(row["epoch"]))
    return result | {"profile": cfg.profile, "val_psnr": scores["psnr"], "codebook_usage": scores["codebook_usage"],
                     "codebook_perplexity": scores["codebook_perplexity"], "codebook_size": cfg.num_vq_embeddings,
                     "train_images": len(train_pixels), "val_images": len(val_pixels), "skipped": dict(skipped)}
