"""`prefgen eval guidance`: does fused guidance make images a segment prefers, while showing the prompt? No truth needed.

Protocol (judged by eval/judges.py's models, which never guide):

    segments          `segments_per_half` of each half (metrics/dev_test.py, a segment by its id) among those both
                      the judge scorer and Step 1 know, picked by a seeded hash
    prompts           params, or the train catalogue's most frequent non-empty captions
    jobs              one image per (segment, prompt) and arm, every arm from the same starting noise (its seed from
                      the evaluation's seed, the segment and the prompt: even in dev, odd in test)
    arms              none: the conditional model alone; cfg: classifier-free guidance only; fused: cfg + both
                      gradient guides (params `sampler`, what the nightly uses)
    uplift_over_X     mean over jobs of the judge's standardised preference of the fused image minus the X image
                      for the job's segment, with a 95% bootstrap interval over segments
    win_over_X        the share of jobs whose fused image the judge prefers (ties count half), interval likewise
    text_consistency  the share of fused images the judge CLIP retrieves their own prompt for among all prompts
                      (chance 1 / prompts), interval likewise; also per arm
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from prefgen.data import contract as c
from prefgen.eval.config import EvalGuidanceConfig
from prefgen.eval.judges import Judges
from prefgen.eval.sample_arms import ARMS, Workers, sample_arms
from prefgen.generation.config import GuidanceConfig
from prefgen.metrics.bootstrap import unit_interval
from prefgen.metrics.dev_test import HALVES, half

JUDGED_ARMS = ("none", "cfg", "fused")
BASELINES = ("none", "cfg")


def catalogue_prompts(tables_dir: Path, split_path: Path, count: int) -> list[str]:
    """The `count` most frequent non-empty captions of the train images (ties by caption)."""
    train = pl.read_parquet(split_path).filter(pl.col("split") == "train").select("image_id")
    captions = pl.read_parquet(tables_dir / c.IMAGES_FILE).join(train, on="image_id")["caption"].fill_null("")
    counted = Counter(" ".join(caption.split()) for caption in captions if caption.strip())
    ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) < 2:
        raise ValueError(f"{len(ranked)} distinct train caption(s): text consistency needs two prompts or more; "
                         "list them in params eval_guidance.prompts")
    return [caption for caption, _ in ranked[:count]]


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}|{key}".encode("utf-8")).digest()


def chosen_segments(candidates: list[str], per_half: int, seed: int) -> list[str]:
    """Up to `per_half` segments of each half, by a seeded hash of their ids (the same ids pick the same segments)."""
    chosen = []
    for name in HALVES:
        mine = sorted((s for s in candidates if half(s) == name), key=lambda s: _rank(seed, s))
        chosen += sorted(mine[:per_half])
    return chosen


def job_seed(seed: int, segment: str, prompt: str) -> int:
    """The starting noise's seed of one job: even in dev, odd in test, so the halves never share noise."""
    digest = _rank(seed, f"{segment}|{prompt}")
    return (int.from_bytes(digest[:7], "big") << 1) | (half(segment) == "test")


def _summary(rows: pl.DataFrame, n_prompts: int, cfg: EvalGuidanceConfig, rng: np.random.Generator) -> dict[str, float]:
    """One half's figures (module docstring) from its per-job rows."""
    _, units = np.unique(rows["segment"].to_numpy(), return_inverse=True)
    out: dict[str, float] = {"segments": int(units.max() + 1), "jobs": rows.height, "text_chance": 1.0 / n_prompts}

    def with_interval(name: str, values: np.ndarray) -> None:
        out[name] = float(values.mean())
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = unit_interval(values, units, rng, cfg.bootstrap)

    fused = rows["preference_fused"].to_numpy()
    for base in BASELINES:
        diff = fused - rows[f"preference_{base}"].to_numpy()
        with_interval(f"uplift_over_{base}", diff)
        with_interval(f"win_over_{base}", np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0)))
    with_interval("text_consistency", rows["text_match_fused"].to_numpy().astype(float))
    for arm in JUDGED_ARMS:
        out[f"preference_{arm}"] = float(rows[f"preference_{arm}"].mean())
        out[f"text_consistency_{arm}"] = float(rows[f"text_match_{arm}"].mean())
    return out


def evaluate(cfg: EvalGuidanceConfig, sampler: GuidanceConfig, workers: Workers, latent_shape: tuple[int, ...],
             judges: Judges, segments: list[str], prompts: list[str], log=print) -> tuple[dict, pl.DataFrame, dict[str, torch.Tensor]]:
    """(metrics with a `dev` and a `test` block, one row per job, each arm's images (jobs, 3, H, W))."""
    jobs = [(segment, prompt) for segment in segments for prompt in prompts]
    seeds = [job_seed(cfg.seed, segment, prompt) for segment, prompt in jobs]
    arms = {arm: replace(sampler, **ARMS[arm]) for arm in JUDGED_ARMS}
    own_prompt = np.array([prompts.index(prompt) for _, prompt in jobs])
    rows = pl.DataFrame({"segment": [s for s, _ in jobs], "prompt": [p for _, p in jobs], "half": [half(s) for s, _ in jobs]})
    images = {}
    for arm, pixels, seconds in sample_arms(workers, arms, jobs, 1, latent_shape, seeds, cfg.images_per_batch):
        images[arm] = pixels[:, 0]
        features = judges.features(images[arm])
        rows = rows.with_columns(pl.Series(f"preference_{arm}", judges.preference(rows["segment"].to_list(), features)),
                                 pl.Series(f"text_match_{arm}", judges.prompt_choice(features, prompts) == own_prompt))
        log(f"eval_guidance: {arm:>5}: mean judged preference {rows[f'preference_{arm}'].mean():+.3f}, "
            f"text consistency {rows[f'text_match_{arm}'].mean():.3f}; {seconds:.0f} worker-seconds")
    rng = np.random.default_rng(cfg.seed)
    metrics: dict = {"prompts": len(prompts), "jobs_per_arm": len(jobs)}
    for name in HALVES:
        mine = rows.filter(pl.col("half") == name)
        metrics[name] = _summary(mine, len(prompts), cfg, rng) if mine.height else {}
    return metrics, rows, images


def contact_sheet(images: dict[str, torch.Tensor], rows: pl.DataFrame, count: int = 8):
    """A PNG of the first prompt's jobs for the first `count` segments, one per row: the none, cfg and fused image side
    by side, at twice the size."""
    from PIL import Image

    picked = [k for k, prompt in enumerate(rows["prompt"]) if prompt == rows["prompt"][0]][:count]
    size = next(iter(images.values())).shape[-1]
    sheet = Image.new("RGB", (len(JUDGED_ARMS) * size, len(picked) * size), "white")
    for r, job in enumerate(picked):
        for column, arm in enumerate(JUDGED_ARMS):
            tile = (images[arm][job].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(tile), (column * size, r * size))
    return sheet.resize((sheet.width * 2, sheet.height * 2), Image.Resampling.NEAREST)
