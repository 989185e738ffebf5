"""DVC stage `eval_guidance`: the guided sampler (params [sampler], the bundle's models) judged by the judges that
never guide (paths.judges): fused guidance against unguided and CFG-only images of the same prompts and noise, with
no ground truth (eval/guidance.py). Writes the metrics (a `dev` and a `test` block, and flat the judges' own validity:
judge_clip_val_acc, judge_scorer_cold_auc, from train_judges), one row per job
(`jobs.parquet`: segment, prompt, half, each arm's judged preference and prompt match) and a contact sheet
(`arms.png`: none, cfg, fused per row) to paths.eval_guidance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
import torch

from prefgen.checkpoint import replace_folder
from prefgen.eval import guidance
from prefgen.eval.config import EvalGuidanceConfig
from prefgen.eval.judges import Judges
from prefgen.eval.sample_arms import Workers
from prefgen.generation.assemble import pipeline_from_outputs
from prefgen.generation.config import GuidanceConfig
from prefgen.params import section
from prefgen.paths import Paths
from prefgen.vision.config import VisualFeaturesConfig

USER_ERRORS = (FileNotFoundError, ValueError)  # a model or the judges not trained yet, or too few captions for prompts


@dataclass(frozen=True)
class EvalGuidanceSettings:
    """The evaluation, the sampler it judges, and the visual features its guide reads."""

    evaluation: EvalGuidanceConfig
    sampler: GuidanceConfig
    visual: VisualFeaturesConfig


def load_config(params: dict[str, Any] | None) -> EvalGuidanceSettings:
    return EvalGuidanceSettings(section(params, EvalGuidanceConfig, "eval_guidance"), section(params, GuidanceConfig, "sampler"),
                                section(params, VisualFeaturesConfig, "visual_features"))


def known_segments(graph_dir: Path, judges: Judges) -> list[str]:
    """Segments with a Step 1 vector (the guide's) that the judge scorer knows too, sorted."""
    step1 = pl.read_parquet(graph_dir / "segments.parquet")["segment_id"].to_list()
    both = sorted(s for s in step1 if s in judges.segment_row)
    if not both:
        raise ValueError(f"no segment is known to both Step 1 ({graph_dir}) and the judge scorer: nothing to judge")
    return both


def run(cfg: EvalGuidanceSettings, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    evaluation = cfg.evaluation
    torch.set_num_threads(evaluation.threads)
    judges = Judges(paths.judges)
    prompts = evaluation.prompts or guidance.catalogue_prompts(paths.tables, paths.split, evaluation.n_prompts)
    segments = guidance.chosen_segments(known_segments(paths.graph, judges), evaluation.segments_per_half, evaluation.seed)
    log(f"eval_guidance: {len(segments)} segments x {len(prompts)} prompts, arms {', '.join(guidance.JUDGED_ARMS)}")
    make_pipe = partial(pipeline_from_outputs, paths, cfg.visual, cfg.sampler)
    pipe = make_pipe()
    with Workers(make_pipe, evaluation.workers, evaluation.threads, local=pipe) as workers:
        metrics, rows, images = guidance.evaluate(evaluation, cfg.sampler, workers, pipe.latent_shape, judges, segments, prompts, log)

    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        rows.write_parquet(folder / "jobs.parquet")
        guidance.contact_sheet(images, rows).save(folder / "arms.png")

    replace_folder(paths.eval_guidance, write)
    if mlflow.active_run():
        mlflow.log_artifacts(str(paths.eval_guidance), artifact_path="eval_guidance")
    for name in ("dev", "test"):
        if metrics[name]:
            figures = metrics[name]
            log(f"eval_guidance: {name}: uplift over none {figures['uplift_over_none']:+.3f} [{figures['uplift_over_none_ci_low']:+.3f}, "
                f"{figures['uplift_over_none_ci_high']:+.3f}], over cfg {figures['uplift_over_cfg']:+.3f}; text consistency "
                f"{figures['text_consistency']:.3f} (chance {figures['text_chance']:.3f})")
    return metrics | {f"judge_{name}": value for name, value in judges.validity.items()}
