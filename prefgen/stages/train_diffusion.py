"""DVC stage `train_diffusion`: Step 3.3's conditioned latent diffusion model -> paths.diffusion.

Output folder: `unet/` (EMA weights, diffusers save_pretrained, safetensors),
`scheduler/` (the DDPM noise schedule it was trained with) and `conditioning.json`
(latent scale, condition layout, config). Under `torchrun`, every rank trains and only
rank 0 writes outputs and returns metrics; the others return an empty dict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import polars as pl

from prefgen.atomic import write_json_atomic
from prefgen.checkpoint import replace_folder
from prefgen.generation import train_diffusion as trainer
from prefgen.generation.config import TrainDiffusionConfig
from prefgen.generation.data import diffusion_inputs
from prefgen.generation.unet import PREF_TOKEN, TEXT_TOKEN, build_noise_scheduler
from prefgen.params import section
from prefgen.paths import Paths


def load_config(params: dict[str, Any] | None) -> TrainDiffusionConfig:
    return section(params, TrainDiffusionConfig, "train_diffusion")


def save_outputs(unet, cfg: TrainDiffusionConfig, scaling_factor: float, out: Path) -> None:
    def write(tmp: Path) -> None:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        build_noise_scheduler(cfg).save_pretrained(tmp / "scheduler")
        write_json_atomic(tmp / "conditioning.json", {"scaling_factor": scaling_factor, "text_token": TEXT_TOKEN, "pref_token": PREF_TOKEN,
                                                     "null_condition": "zeros", "train_diffusion": asdict(cfg)})
    replace_folder(out, write)


def run(cfg: TrainDiffusionConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    rank, _ = trainer.init_distributed()
    skipped = Counter()
    data = diffusion_inputs(cfg, paths, skipped)
    unet, history = trainer.fit(data, cfg, paths.checkpoint_dir("diffusion"), log=log if rank == 0 else (lambda _: None))
    if rank != 0:  # other ranks train beside rank 0 but write nothing
        return {}
    save_outputs(unet, cfg, data.scaling_factor, paths.diffusion)
    curve = paths.curve_file("train_diffusion")
    curve.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(history.epochs).write_csv(curve)
    if mlflow.active_run():
        mlflow.log_artifacts(str(paths.diffusion), artifact_path="diffusion")
        for row in history.epochs:
            mlflow.log_metrics({"epoch_loss": row["loss"], "epoch_val_loss": row["val_loss"]}, step=int(row["epoch"]))
    last = history.epochs[-1]
    return {"profile": cfg.profile, "final_loss": last["loss"], "val_loss": last["val_loss"], "epochs": len(history.epochs),
            "steps": last["steps"], "train_seconds": sum(e["seconds"] for e in history.epochs),
            "samples_per_second": sum(e["samples_per_second"] for e in history.epochs) / len(history.epochs),
            "train_samples": len(data.latents), "val_samples": len(data.val_latents), "scaling_factor": data.scaling_factor,
            "world_size": history.world_size, "ranks_identical": len(set(history.rank_weight_sha256)) == 1,
            "rank_weight_sha256": history.rank_weight_sha256, "skipped": dict(skipped)}
