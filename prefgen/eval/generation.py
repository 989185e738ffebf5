"""`prefgen eval generation`: do the images for segment A look like what A likes, while showing what the prompt says?

Protocol (default synthetic world; judged by the oracle, eval/oracle.py, never by the guides):

    pairs            per prompt, disjoint pairs (A, B) of segments whose true tastes differ: 1 - Pearson
                     correlation of their utilities over the 128 attribute classes >= min_taste_distance
    win_rate         per pair, n images for A and n for B, same prompt; A wins when A's images have the
                     higher mean true utility *for A* (ties count half); the share of pairs A wins,
                     with a 95% percentile-bootstrap interval over pairs
    text_consistency the share of images whose oracle reading equals the attribute the prompt names
    utility_gain     mean over pairs of u_A(A's images) - u_A(B's images), in utility units
    frechet_oracle   Fréchet distance of the arm's images to the `train` images in the oracle's feature space
    arms (ablation)  none: the conditional model alone; cfg: classifier-free guidance; text_grad / pref_grad:
                     cfg + one gradient guide; fused: cfg + both, fused (METHOD.md 3.5)

Every arm samples the same (segment, prompt, seed) jobs from the same starting noise, so arms
differ only by their guidance (eval/sample_arms.py samples them: steps the arms share run once, over
worker processes). An unreadable hue (no coloured shape) scores the mean over hues.

Dev and test (prefgen/metrics/dev_test.py): a pair is a unit, in the half of its key "prompt|A|B" (both
segments and the prompt); every figure is written per half, over that half's pairs only. The pairs are
drawn as before, so each half holds about half of them. Dev and test never share noise: each side of a
pair starts from the noise of a seed derived from (the evaluation's seed, the pair's key, the side), even
in dev and odd in test.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import torch

from prefgen.data.render import HUES, PATTERNS, SHAPES
from prefgen.eval.config import EvalGenerationConfig
from prefgen.eval.image_quality import frechet_distance
from prefgen.eval.oracle import Oracle, Reading
from prefgen.eval.sample_arms import ARMS, Workers, sample_arms
from prefgen.eval.truth import Truth
from prefgen.generation.config import GuidanceConfig
from prefgen.metrics.dev_test import HALVES, half
from prefgen.params import ConfigError

VOCABULARY = {"hue": HUES, "shape": SHAPES, "pattern": PATTERNS}


def named_attribute(prompt: str) -> tuple[str, int]:
    """(attribute, index) of the one attribute value the prompt names, e.g. "a star" -> ("shape", 3)."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    named = [(attr, values.index(w)) for attr, values in VOCABULARY.items() for w in values if w in words]
    if len(named) != 1:
        raise ConfigError(f"prompt {prompt!r} names {len(named)} attribute values {named}; each prompt must name exactly one")
    return named[0]


def class_utilities(truth: Truth, segments: list[str]) -> np.ndarray:
    """(S, hue, pattern, shape) true utility of every attribute class for each segment ("grp:..." / "ind:...")."""
    return truth.segment_tastes(segments).class_utility()


@dataclass(frozen=True)
class Pair:
    prompt: str
    a: int  # index into the candidate segments
    b: int


def draw_pairs(utilities: np.ndarray, prompts: list[str], per_prompt: int, min_distance: float,
               rng: np.random.Generator) -> list[Pair]:
    """Per prompt, `per_prompt` disjoint pairs of candidates whose taste distance is at least `min_distance`."""
    distance = 1 - np.corrcoef(utilities.reshape(len(utilities), -1))
    pairs = []
    for prompt in prompts:
        free = list(rng.permutation(len(utilities)))
        found = 0
        while free and found < per_prompt:
            a = free.pop(0)
            partner = next((b for b in free if distance[a, b] >= min_distance), None)
            if partner is not None:
                free.remove(partner)
                pairs.append(Pair(prompt, int(a), int(partner)))
                found += 1
        if found < per_prompt:
            raise ValueError(f"only {found} of {per_prompt} pairs with taste distance >= {min_distance} for {prompt!r}: "
                             "lower min_taste_distance or pairs_per_prompt")
    return pairs


def pair_key(pair: Pair, segments: list[str]) -> str:
    """The pair's evaluation-unit key: its prompt and both segments, A first."""
    return f"{pair.prompt}|{segments[pair.a]}|{segments[pair.b]}"


def noise_seed(seed: int, key: str, side: str) -> int:
    """The noise seed of one side of the pair with this key: even in dev, odd in test, so the halves never share one."""
    digest = hashlib.sha256(f"{seed}|{key}|{side}".encode("utf-8")).digest()
    return (int.from_bytes(digest[:7], "big") << 1) | (half(key) == "test")


def judged_utility(utility: np.ndarray, reading: Reading) -> np.ndarray:
    """(n,) true utility of n images as the oracle reads them; `utility` is one taster's (hue, pattern, shape)
    table, or one table per image (n, hue, pattern, shape)."""
    n = len(reading.hue)
    per_image, rows = np.broadcast_to(utility, (n, *utility.shape[-3:])), np.arange(n)
    over_hues = per_image.mean(1)[rows, reading.pattern, reading.shape]
    exact = per_image[rows, reading.hue.clip(0), reading.pattern, reading.shape]
    return np.where(reading.hue >= 0, exact, over_hues)


def bootstrap_interval(values: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def arm_rows(arm: str, pairs: list[Pair], segments: list[str], utilities: np.ndarray, reading: Reading, n: int) -> pl.DataFrame:
    """One row per image: which pair, its half and side, what the oracle read, and its utility for the pair's A."""
    pair_index = np.repeat(np.arange(len(pairs)), 2 * n)
    halves = np.repeat([half(pair_key(p, segments)) for p in pairs], 2 * n)
    side = np.tile(np.repeat(np.array(["A", "B"]), n), len(pairs))
    utility_for_a = judged_utility(utilities[np.repeat([p.a for p in pairs], 2 * n)], reading)
    owner = [segments[index] for p in pairs for index in [p.a] * n + [p.b] * n]
    return pl.DataFrame({"arm": arm, "pair": pair_index, "half": halves, "side": side, "segment": owner,
                         "prompt": np.repeat([p.prompt for p in pairs], 2 * n), "hue": reading.hue, "shape": reading.shape,
                         "pattern": reading.pattern, "utility_for_a": utility_for_a})


def arm_metrics(rows: pl.DataFrame, features: np.ndarray, reference: np.ndarray, cfg: EvalGenerationConfig,
                rng: np.random.Generator) -> dict[str, float]:
    per_pair = rows.group_by("pair", "side").agg(pl.col("utility_for_a").mean()).pivot("side", index="pair", values="utility_for_a").sort("pair")
    gain = (per_pair["A"] - per_pair["B"]).to_numpy()
    wins = np.where(gain > 0, 1.0, np.where(gain == 0, 0.5, 0.0))
    named = {prompt: named_attribute(prompt) for prompt in rows["prompt"].unique()}
    read = {"hue": rows["hue"].to_numpy(), "shape": rows["shape"].to_numpy(), "pattern": rows["pattern"].to_numpy()}
    consistent = np.array([read[named[p][0]][i] == named[p][1] for i, p in enumerate(rows["prompt"])], dtype=float)
    per_pair_consistency = consistent.reshape(len(wins), -1).mean(1)
    out = {"win_rate": float(wins.mean()), "text_consistency": float(consistent.mean()), "utility_gain": float(gain.mean()),
           "unread_hue_share": float((read["hue"] < 0).mean()), "frechet_oracle": frechet_distance(features, reference)}
    for name, values in (("win_rate", wins), ("text_consistency", per_pair_consistency), ("utility_gain", gain)):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_interval(values, cfg.bootstrap, rng)
    return out


def half_metrics(rows: pl.DataFrame, features: np.ndarray, reference: np.ndarray, cfg: EvalGenerationConfig,
                 rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """{"dev": .., "test": ..}: one arm's figures over each half's pairs alone (a half with no pair has none)."""
    out = {}
    for name in HALVES:
        mine = (rows["half"] == name).to_numpy()
        out[name] = arm_metrics(rows.filter(mine), features[mine], reference, cfg, rng) if mine.any() else {}
    return out


def contact_sheet(images: torch.Tensor, pairs: list[Pair], rows: int = 8):
    """A PNG grid of the first pairs, shown at twice the size: per row, A's images, a gap, then B's."""
    from PIL import Image

    n, size = images.shape[1], images.shape[-1]
    rows = min(rows, len(pairs))
    sheet = Image.new("RGB", ((2 * n) * size + size // 2, rows * size), "white")
    for r in range(rows):
        for side in range(2):
            for k in range(n):
                tile = (images[2 * r + side, k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                sheet.paste(Image.fromarray(tile), ((side * n + k) * size + side * (size // 2), r * size))
    return sheet.resize((sheet.width * 2, sheet.height * 2), Image.Resampling.NEAREST)  # 64-pixel tiles are small on a screen


def evaluate(cfg: EvalGenerationConfig, sampler: GuidanceConfig, workers: Workers, latent_shape: tuple[int, ...],
             oracle: Oracle, truth: Truth, candidates: list[str], reference: np.ndarray,
             log=print) -> tuple[dict, pl.DataFrame, torch.Tensor, list[Pair]]:
    """Every arm on the same pairs: (metrics with a `dev` and a `test` block, each the fused arm's figures and an `ablation`
    table over its half's pairs; per-image rows; the fused arm's images; pairs)."""
    rng = np.random.default_rng(cfg.seed)
    utilities = class_utilities(truth, candidates)
    pairs = draw_pairs(utilities, cfg.prompts, cfg.pairs_per_prompt, cfg.min_taste_distance, rng)
    keys = [pair_key(p, candidates) for p in pairs]
    jobs = [(candidates[index], p.prompt) for p in pairs for index in (p.a, p.b)]
    seeds = [noise_seed(cfg.seed, key, side) for key in keys for side in ("A", "B")]
    n, by_arm, seconds_per_image, all_rows, fused_images = cfg.images_per_segment, {}, {}, [], None
    started, arms = time.perf_counter(), {arm: replace(sampler, **ARMS[arm]) for arm in cfg.arms}
    for arm, pixels, seconds in sample_arms(workers, arms, jobs, n, latent_shape, seeds, cfg.images_per_batch):
        reading = oracle.read(pixels.flatten(0, 1))
        rows = arm_rows(arm, pairs, candidates, utilities, reading, n)
        by_arm[arm] = half_metrics(rows, reading.features, reference, cfg, rng)
        # what the arm's images cost on this machine: worker time (its share of shared steps in) over the workers
        seconds_per_image[arm] = seconds / (len(jobs) * n * workers.workers)
        log(f"{arm:>9}: " + "; ".join(_summary(name, by_arm[arm][name]) for name in HALVES) + f"; {seconds_per_image[arm]:.2f} s/image")
        all_rows.append(rows)
        fused_images = pixels if arm == "fused" else fused_images
    metrics = {"pairs": len(pairs)} | {f"{name}_pairs": sum(half(k) == name for k in keys) for name in HALVES}
    metrics |= {name: by_arm["fused"][name] | {"ablation": {arm: by_arm[arm][name] for arm in arms}} for name in HALVES}
    metrics |= {"images_per_arm": len(jobs) * n, "min_taste_distance": cfg.min_taste_distance, "seconds_per_image": seconds_per_image,
                "arms_wall_seconds": time.perf_counter() - started, "workers": workers.workers}
    return metrics, pl.concat(all_rows), fused_images, pairs


def _summary(name: str, figures: dict[str, float]) -> str:
    if not figures:
        return f"{name} no pair"
    return (f"{name} win rate {figures['win_rate']:.3f} [{figures['win_rate_ci_low']:.3f}, {figures['win_rate_ci_high']:.3f}], "
            f"text consistency {figures['text_consistency']:.3f}")
