"""DVC stage `train_diffusion`: Step 3.3's conditioned latent diffusion model -> paths.diffusion.

It streams the VQ latents of the image store's images (paths.images), encoded once per VQ into latent stores under
`paths.checkpoints / "latents"` (kept across runs, not a DVC output).

Output folder: `unet/` (EMA weights, diffusers save_pretrained, safetensors),
`scheduler/` (the DDPM noise schedule it was trained with) and `conditioning.json`
(latent scale, condition layout, config). Under `torchrun` or `accelerate launch`, every process
trains and only rank 0 writes outputs and returns metrics; the others return an empty dict.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow

from prefgen.atomic import write_json_atomic
from prefgen.checkpoint import replace_folder
from prefgen.generation import train_diffusion as diffusion
from prefgen.generation.config import TrainDiffusionConfig
from prefgen.generation.data import diffusion_inputs
from prefgen.generation.unet import PREF_TOKEN, TEXT_TOKEN, build_noise_scheduler
from prefgen.paths import Paths
from prefgen.training.config import Training, training_section


def load_config(params: dict[str, Any] | None) -> Training[TrainDiffusionConfig]:
    return training_section(params, TrainDiffusionConfig, "train_diffusion")


def save_outputs(unet, cfg: TrainDiffusionConfig, scaling_factor: float, out: Path) -> None:
    def write(tmp: Path) -> None:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        build_noise_scheduler(cfg).save_pretrained(tmp / "scheduler")
        write_json_atomic(tmp / "conditioning.json", {"scaling_factor": scaling_factor, "text_token": TEXT_TOKEN, "pref_token": PREF_TOKEN,
                                                     "null_condition": "zeros", "train_diffusion": asdict(cfg)})
    replace_folder(out, write)


def run(cfg: Training[TrainDiffusionConfig], paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    model, main = cfg.model, int(os.environ.get("RANK", "0")) == 0
    skipped = Counter()
    data = diffusion_inputs(model, paths, skipped)
    unet, history = diffusion.fit(data, model, cfg.trainer, paths.checkpoint_dir("diffusion"),
                                  paths.curve_file("train_diffusion"), log=log if main else (lambda _: None))
    hashes = diffusion.rank_weight_sha256(unet)  # every process takes part in the gather
    if not main:  # the other processes train beside rank 0 but write nothing
        return {}
    save_outputs(unet.to("cpu"), model, data.scaling_factor, paths.diffusion)
    if mlflow.active_run():
        mlflow.log_artifacts(str(paths.diffusion), artifact_path="diffusion")
    last, seconds = history.epochs[-1], [e["seconds"] for e in history.epochs]
    return {"profile": model.profile, "final_loss": last["loss"], "val_loss": last["val_loss"], "epochs": len(history.epochs),
            "steps": len(history.epochs) * -(-len(data.latents) // model.batch_size), "train_seconds": sum(seconds),
            "samples_per_second": sum(len(data.latents) / s for s in seconds) / len(seconds),
            "train_samples": len(data.latents), "val_samples": len(data.val_latents), "scaling_factor": data.scaling_factor,
            "world_size": history.world_size, "device": history.device, "mixed_precision": history.mixed_precision,
            "ranks_identical": len(set(hashes)) == 1, "rank_weight_sha256": hashes, "skipped": dict(skipped)}
