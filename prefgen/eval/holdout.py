"""Stage `eval_holdout`: Step 1 judged on the clicks of the held-out window, with no ground truth.

The window is the split's (`split.holdout_days`, data/split.py): no training stage read an event in it. The protocol
is the group-recommendation one of `prefgen bench grouprec` (../shared/data/README.md):

- a row per held-out positive: a (segment, image) clicked in the window, where Step 1 knows the segment and the
  image (it could have learnt both) and the segment had not clicked the image before the window;
- its negatives: `negatives` images drawn (seeded, without replacement) from those Step 1 knows that the segment
  never clicked, before or in the window;
- scores: Step 1's <P p_s, e_i> (preference/encoder.py), and popularity (an image's interactions in training) in
  the same run; HR@k and NDCG@k tie-aware (metrics/sampled.py), individuals and groups also apart;
- dev and test halves by segment id (metrics/dev_test.py), with a bootstrap interval by segment of Step 1's HR@k
  minus popularity's on each half.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from prefgen.data import contract as c
from prefgen.data.split import holdout_from, training_events
from prefgen.data.tables import scan_parts
from prefgen.eval.config import EvalHoldoutConfig
from prefgen.metrics.bootstrap import unit_interval
from prefgen.metrics.dev_test import HALVES, in_test_half
from prefgen.metrics.ranking import segment_interactions
from prefgen.metrics.sampled import per_row_metrics
from prefgen.preference.outputs import Step1, load_step1


@dataclass(frozen=True)
class HeldOutRows:
    """One row per held-out positive: its segment, the positive's and the negatives' item rows in Step 1."""

    segments: list[str]
    positives: np.ndarray  # (n,) item rows
    negatives: np.ndarray  # (n, m) item rows


def window_clicks(tables_dir: Path, start: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(before, within): distinct (segment_id, image_id) interactions before the window's start and in it."""
    events = scan_parts(tables_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA).collect()
    pairs = segment_interactions(events).with_columns(ms=pl.col("ts").dt.epoch("ms"))
    before = pairs.filter(pl.col("ms") < start).select("segment_id", "image_id").unique()
    within = pairs.filter(pl.col("ms") >= start).select("segment_id", "image_id").unique()
    return before, within


def held_out_rows(step1: Step1, before: pl.DataFrame, within: pl.DataFrame, cfg: EvalHoldoutConfig) -> HeldOutRows:
    """The rows of the protocol (module docstring), sorted by segment then image so a seed draws the same negatives."""
    known = within.filter(pl.col("segment_id").is_in(list(step1.segment_row)) & pl.col("image_id").is_in(list(step1.item_row)))
    fresh = known.join(before, on=["segment_id", "image_id"], how="anti").sort("segment_id", "image_id")
    clicked = pl.concat([before, within]).group_by("segment_id").agg("image_id")
    seen = {segment: {step1.item_row[i] for i in images if i in step1.item_row} for segment, images in clicked.iter_rows()}
    rng, n_items = np.random.default_rng(cfg.seed), len(step1.item_row)
    segments, positives, negatives = [], [], []
    for (segment,), rows in fresh.group_by("segment_id", maintain_order=True):
        pool = np.setdiff1d(np.arange(n_items), np.fromiter(seen[segment], dtype=np.int64))
        if len(pool) < cfg.negatives:
            continue  # the segment clicked nearly everything: no fair draw of negatives
        for image in rows["image_id"]:
            segments.append(segment), positives.append(step1.item_row[image])
            negatives.append(rng.choice(pool, cfg.negatives, replace=False))
    return HeldOutRows(segments, np.array(positives, dtype=np.int64),
                       np.array(negatives, dtype=np.int64).reshape(-1, cfg.negatives))


@torch.no_grad()
def step1_scores(step1: Step1, rows: HeldOutRows) -> tuple[np.ndarray, np.ndarray]:
    """(positive scores (n,), negative scores (n, m)): <P p_s, e_i>."""
    projected = step1.p[[step1.segment_row[s] for s in rows.segments]] @ step1.project.T
    pos = (projected * step1.items[rows.positives]).sum(-1)
    neg = torch.einsum("nd,nmd->nm", projected, step1.items[rows.negatives])
    return pos.double().numpy(), neg.double().numpy()


def popularity_scores(tables_dir: Path, split_path: Path, step1: Step1, rows: HeldOutRows) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) scores of popularity: each image's interactions in what training read."""
    trained = segment_interactions(training_events(tables_dir, split_path).collect())
    counts = np.zeros(len(step1.item_row))
    index = [step1.item_row[i] for i in trained["image_id"] if i in step1.item_row]
    np.add.at(counts, index, 1)
    return counts[rows.positives], counts[rows.negatives]


def summarise(segments: list[str], model: dict[str, np.ndarray], base: dict[str, np.ndarray], k: int,
              bootstrap: int, seed: int) -> dict[str, float | int]:
    """One half's figures from per-row metrics of the model and of popularity."""
    hr, ndcg = f"hr{k}", f"ndcg{k}"
    kinds = np.array([s[:3] for s in segments])
    _, groups = np.unique(segments, return_inverse=True)
    out: dict[str, float | int] = {"positives": len(segments), "segments": int(groups.max() + 1)}
    out |= {hr: float(model[f"HR@{k}"].mean()), ndcg: float(model[f"NDCG@{k}"].mean()),
            f"popularity_{hr}": float(base[f"HR@{k}"].mean()), f"popularity_{ndcg}": float(base[f"NDCG@{k}"].mean())}
    for kind, name in (("ind", "individuals"), ("grp", "groups")):
        mask = kinds == kind
        out[f"{hr}_{name}"] = float(model[f"HR@{k}"][mask].mean()) if mask.any() else float("nan")
    diff = model[f"HR@{k}"] - base[f"HR@{k}"]
    low, high = unit_interval(diff, groups, np.random.default_rng(seed), bootstrap)
    return out | {f"{hr}_minus_popularity": float(diff.mean()), f"{hr}_minus_popularity_ci_low": low,
                  f"{hr}_minus_popularity_ci_high": high}


def evaluate(cfg: EvalHoldoutConfig, tables_dir: Path, split_path: Path, graph_dir: Path) -> dict:
    """The stage's metrics: {holdout_from_ms, positives, dev: {...}, test: {...}} (module docstring)."""
    start = holdout_from(split_path)
    if start is None:
        raise ValueError(f"{split_path} has no held-out window: set params split.holdout_days > 0 and rerun split")
    step1 = load_step1(graph_dir)
    rows = held_out_rows(step1, *window_clicks(tables_dir, start), cfg)
    if not rows.segments:
        raise ValueError(f"no held-out click of a segment and an image Step 1 knows after {start} ms with {cfg.negatives} "
                         "unclicked images to draw negatives from: widen split.holdout_days or lower eval_holdout.negatives")
    model = per_row_metrics(*step1_scores(step1, rows), cfg.k)
    base = per_row_metrics(*popularity_scores(tables_dir, split_path, step1, rows), cfg.k)
    test = in_test_half(rows.segments)
    out: dict = {"holdout_from_ms": start, "positives": len(rows.segments), "negatives": cfg.negatives}
    for name, mask in zip(HALVES, (~test, test)):
        if mask.any():
            pick = {key: value[mask] for key, value in model.items()}, {key: value[mask] for key, value in base.items()}
            out[name] = summarise([s for s, m in zip(rows.segments, mask) if m], *pick, cfg.k, cfg.bootstrap, cfg.seed)
    return out
