"""DVC stage `eval_generation`: the guided sampler judged by the oracle against the world's true tastes.

Writes the metrics (win_rate, text_consistency, the ablation table, quality), one row per
generated image (`images.parquet`: arm, pair, segment, prompt, what the oracle read, utility)
and a contact sheet of the fused arm's first pairs (`fused_pairs.png`) to `out_dir`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
import torch

from prefgen.checkpoint import replace_folder
from prefgen.config import VisualFeaturesConfig
from prefgen.eval import generation, image_quality
from prefgen.eval.config import EvalGenerationConfig
from prefgen.eval.oracle import Oracle
from prefgen.eval.sample_arms import Workers
from prefgen.eval.truth import load_truth
from prefgen.generation.assemble import pipeline_from_outputs
from prefgen.generation.config import GuidanceConfig
from prefgen.stages.common import run_stage
from prefgen.vision.pixels import read_split


def candidate_segments(graph_dir: Path, kinds: list[str]) -> list[str]:
    """Step 1's segments in the namespaces asked for (every one has a preference vector), sorted."""
    ids = pl.read_parquet(graph_dir / "segments.parquet")["segment_id"]
    chosen = sorted(s for s in ids.to_list() if s.split(":", 1)[0] in kinds)
    if not chosen:
        raise ValueError(f"no Step 1 segment in the namespaces {kinds} ({graph_dir / 'segments.parquet'})")
    return chosen


def pipeline_factory(cfg: EvalGenerationConfig, visual: VisualFeaturesConfig, sampler: GuidanceConfig,
                     root: Path = Path(".")) -> partial:
    """A picklable builder of the guided sampler from the stage outputs under `root` (worker processes call it)."""
    visual = replace(visual, clip_dir=str(root / visual.clip_dir), out_dir=str(root / visual.out_dir))
    return partial(pipeline_from_outputs, root / cfg.diffusion_dir, root / cfg.vq_dir, root / cfg.w_dir, root / cfg.mapper_dir,
                   root / cfg.graph_dir, visual, root / cfg.split, sampler)


def evaluate(cfg: EvalGenerationConfig, sampler: GuidanceConfig, visual: VisualFeaturesConfig, world: str,
             log=print) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    truth, oracle = load_truth(Path(cfg.truth_dir), world), Oracle.load(Path(cfg.oracle_dir))
    make_pipe = pipeline_factory(cfg, visual, sampler)
    pipe = make_pipe()
    paths = Path(cfg.tables_dir), Path(cfg.images_dir), Path(cfg.split)
    cold = image_quality.world_images(*paths, "cold", oracle.image_size, cfg.reference_images, truth)
    train = read_split(*paths, "train", oracle.image_size, Counter())[1]
    quality, reference = image_quality.world_quality(pipe.vq, oracle, cold, train)
    log(f"quality: VQ PSNR on cold images {quality['vq_psnr_cold']:.2f} dB; oracle on cold images "
        f"hue/shape/pattern {quality['oracle_hue_accuracy_world_cold']:.3f}/{quality['oracle_shape_accuracy_world_cold']:.3f}/"
        f"{quality['oracle_pattern_accuracy_world_cold']:.3f}")
    candidates = candidate_segments(Path(cfg.graph_dir), cfg.segment_kinds)
    with Workers(make_pipe, cfg.workers, cfg.threads, local=pipe) as workers:
        metrics, rows, fused_images, pairs = generation.evaluate(cfg, sampler, workers, pipe.latent_shape, oracle, truth,
                                                                 candidates, reference, log)

    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        rows.write_parquet(folder / "images.parquet")
        generation.contact_sheet(fused_images, pairs).save(folder / "fused_pairs.png")

    replace_folder(Path(cfg.out_dir), write)
    if mlflow.active_run():
        mlflow.log_artifacts(cfg.out_dir, artifact_path="eval_generation")
    return {**metrics, "quality": quality, "world": world, "world_sha256": truth.world_sha256,
            "pairs_groups_share": float(np.mean([candidates[p.a].startswith("grp:") for p in pairs]))}


def run(cfg: EvalGenerationConfig, sampler: GuidanceConfig, visual: VisualFeaturesConfig, world: str,
        params: dict[str, Any] | None, root: Path, log=print) -> dict[str, Any]:
    return run_stage("eval_generation", params, root, Path(cfg.metrics) if params else None,
                     lambda: evaluate(cfg, sampler, visual, world, log), not_metrics=("world", "world_sha256"))
