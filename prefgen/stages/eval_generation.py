"""DVC stage `eval_generation`: the guided sampler judged by the oracle against the world's true tastes.

Writes the metrics (a `dev` and a `test` block, each with win_rate, text_consistency and the ablation
table over its half's pairs; quality and counts flat), one row per generated image (`images.parquet`:
arm, pair, half, segment, prompt, what the oracle read, utility) and a contact sheet of the fused arm's
first pairs (`fused_pairs.png`) to paths.eval_generation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
import torch

from prefgen.checkpoint import replace_folder
from prefgen.eval import generation, image_quality
from prefgen.eval.config import EvalGenerationConfig
from prefgen.eval.oracle import Oracle
from prefgen.eval.sample_arms import Workers
from prefgen.eval.truth import load_truth
from prefgen.generation.assemble import pipeline_from_outputs
from prefgen.generation.config import GuidanceConfig
from prefgen.params import section
from prefgen.paths import Paths
from prefgen.vision.config import VisualFeaturesConfig
from prefgen.vision.pixels import read_split


@dataclass(frozen=True)
class EvalGenerationSettings:
    """The stage's three params sections: the evaluation, the sampler it judges, and the visual features its guide reads."""

    evaluation: EvalGenerationConfig
    sampler: GuidanceConfig
    visual: VisualFeaturesConfig


def load_config(params: dict[str, Any] | None) -> EvalGenerationSettings:
    return EvalGenerationSettings(section(params, EvalGenerationConfig, "eval_generation"), section(params, GuidanceConfig, "sampler"),
                                  section(params, VisualFeaturesConfig, "visual_features"))


def candidate_segments(graph_dir: Path, kinds: list[str]) -> list[str]:
    """Step 1's segments in the namespaces asked for (every one has a preference vector), sorted."""
    ids = pl.read_parquet(graph_dir / "segments.parquet")["segment_id"]
    chosen = sorted(s for s in ids.to_list() if s.split(":", 1)[0] in kinds)
    if not chosen:
        raise ValueError(f"no Step 1 segment in the namespaces {kinds} ({graph_dir / 'segments.parquet'})")
    return chosen


def pipeline_factory(paths: Paths, visual: VisualFeaturesConfig, sampler: GuidanceConfig) -> partial:
    """A picklable builder of the guided sampler from the stage outputs in `paths` (worker processes call it)."""
    return partial(pipeline_from_outputs, paths, visual, sampler)


def run(cfg: EvalGenerationSettings, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    evaluation, sampler = cfg.evaluation, cfg.sampler
    torch.set_num_threads(evaluation.threads)
    truth, oracle = load_truth(paths.truth), Oracle.load(paths.oracle)
    make_pipe = pipeline_factory(paths, cfg.visual, sampler)
    pipe = make_pipe()
    images = paths.tables, paths.prepared, paths.split
    cold = image_quality.world_images(*images, "cold", oracle.image_size, evaluation.reference_images, truth)
    train = read_split(*images, "train", oracle.image_size, Counter())[1]
    quality, reference = image_quality.world_quality(pipe.vq, oracle, cold, train)
    log(f"quality: VQ PSNR on cold images {quality['vq_psnr_cold']:.2f} dB; oracle on cold images "
        f"hue/shape/pattern {quality['oracle_hue_accuracy_world_cold']:.3f}/{quality['oracle_shape_accuracy_world_cold']:.3f}/"
        f"{quality['oracle_pattern_accuracy_world_cold']:.3f}")
    candidates = candidate_segments(paths.graph, evaluation.segment_kinds)
    with Workers(make_pipe, evaluation.workers, evaluation.threads, local=pipe) as workers:
        metrics, rows, fused_images, pairs = generation.evaluate(evaluation, sampler, workers, pipe.latent_shape, oracle, truth,
                                                                 candidates, reference, log)

    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        rows.write_parquet(folder / "images.parquet")
        generation.contact_sheet(fused_images, pairs).save(folder / "fused_pairs.png")

    replace_folder(paths.eval_generation, write)
    if mlflow.active_run():
        mlflow.log_artifacts(str(paths.eval_generation), artifact_path="eval_generation")
    return {**metrics, "quality": quality, "world": truth.world, "world_sha256": truth.world_sha256,
            "pairs_groups_share": float(np.mean([candidates[p.a].startswith("grp:") for p in pairs]))}
