"""DVC stage `train_vq`: Step 3.1's VQ autoencoder, trained on the image store's train split (paths.images)
-> paths.vq, PSNR and codebook metrics. Both splits are streamed from the store a batch at a time.

With `pretrained` set, a local diffusers VQModel folder is loaded instead of
training one; it is evaluated on the same `val` images and saved as the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow

from prefgen.generation import vq
from prefgen.generation.config import TrainVQConfig
from prefgen.paths import Paths
from prefgen.training.config import Training, training_section
from prefgen.vision.image_store import ImageStore


def load_config(params: dict[str, Any] | None) -> Training[TrainVQConfig]:
    return training_section(params, TrainVQConfig, "train_vq")


def run(cfg: Training[TrainVQConfig], paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    model_cfg = cfg.model
    store = ImageStore(paths.images, size=model_cfg.image_size)
    train_images, val_images = store.dataset("train"), store.dataset("val")
    if model_cfg.pretrained:
        model = vq.load_vq(Path(model_cfg.pretrained))
        scores = vq.evaluate(model, val_images)
        result: dict[str, Any] = {"pretrained": model_cfg.pretrained}
    else:
        model, history = vq.fit_vq(train_images, val_images, model_cfg, cfg.trainer, paths.checkpoint_dir("vq"),
                                   paths.curve_file("train_vq"), log=log)
        kept = history.kept_epoch(vq.vq_schedule(model_cfg))
        # The kept epoch's validation ran on exactly the weights the stage saves.
        scores = {key.removeprefix("val_"): value for key, value in history.epochs[kept].items() if key.startswith("val_")}
        result = {"epochs": len(history.epochs), "kept_epoch": kept, "seconds_per_epoch": vq.mean_seconds(history),
                  "train_seconds": sum(e["seconds"] for e in history.epochs)}
    vq.save_vq(model, paths.vq)
    if mlflow.active_run():
        mlflow.log_artifacts(str(paths.vq), artifact_path="vq")
        mlflow.log_dict(asdict(model_cfg), "train_vq_config.json")
    return result | {"profile": model_cfg.profile, "val_psnr": scores["psnr"], "codebook_usage": scores["codebook_usage"],
                     "codebook_perplexity": scores["codebook_perplexity"], "codebook_size": model_cfg.num_vq_embeddings,
                     "train_images": len(train_images), "val_images": len(val_images), "skipped": store.manifest["skipped"]}
