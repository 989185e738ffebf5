"""Stage `reference`: what simple baselines score on the synthetic world.

Learned models must beat these (issues of Steps 1-3 compare against them):

- `ref_influence_spearman`: Spearman correlation, averaged over groups with at
  least `min_group_size` members, between the members' true influence and one
  raw centrality feature; the best single feature (global or inside the
  group), chosen on the dev groups, is the reference, reported in `dev` and
  `test` blocks like eval_graph's (prefgen/metrics/dev_test.py). A constant
  feature within a group counts as 0.
- `ref_cold_auc`: a nearest-centroid scorer on colour histograms. A segment's
  centroid is the mean histogram of the `train` images it interacted with; a
  `cold` image scores minus its L1 distance to it. AUC per segment: positives
  are the cold images it interacted with, negatives the other cold images;
  averaged over segments with both.
- `ref_popularity_*`: popularity (interaction count in the learning part) under
  the ranking protocol of prefgen/metrics/ranking.py, for individuals and groups.

Every metric is written with the world's name and content hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from scipy.stats import spearmanr

from prefgen.data import contract as c
from prefgen.data.tables import scan_parts
from prefgen.eval.config import ReferenceConfig
from prefgen.eval.truth import Truth, load_truth
from prefgen.metrics import ranking
from prefgen.metrics.auc import auc
from prefgen.metrics.dev_test import in_test_half
from prefgen.paths import Paths

_HIST_HUE_BINS, _HIST_GREY_BINS = 18, 4


def colour_histogram(pixels: np.ndarray) -> np.ndarray:
    """Hue histogram weighted by saturation (18 bins) + a lightness histogram of the grey pixels (4 bins), L1-normalised."""
    hsv = np.asarray(Image.fromarray(pixels).convert("HSV"), dtype=np.float64) / 255.0
    hue, sat, val = hsv[..., 0].ravel(), hsv[..., 1].ravel(), hsv[..., 2].ravel()
    coloured = sat > 0.25
    hist = np.bincount((hue[coloured] * _HIST_HUE_BINS).astype(int) % _HIST_HUE_BINS, weights=sat[coloured], minlength=_HIST_HUE_BINS)
    grey = np.bincount(np.minimum((val[~coloured] * _HIST_GREY_BINS).astype(int), _HIST_GREY_BINS - 1), minlength=_HIST_GREY_BINS)
    out = np.concatenate([hist, grey * 0.25])
    return out / max(out.sum(), 1e-12)


def influence_spearman(truth: Truth, centrality_dir: Path, min_size: int) -> dict:
    individuals = pl.read_parquet(centrality_dir / "individuals.parquet")
    in_group = pl.read_parquet(centrality_dir / "group_members.parquet")
    features = [f for f in individuals.columns if f not in ("segment_id", "individual_id")]
    rows = truth.group_members.with_columns(
        pl.format("grp:{}", "group_id").alias("group_segment_id"), pl.format("ind:{}", "member_id").alias("member_segment_id"))
    rows = rows.join(individuals.rename({"segment_id": "member_segment_id"}), on="member_segment_id", how="left")
    group_features = [f for f in in_group.columns if f not in ("group_segment_id", "member_segment_id", "group_size")]
    rows = rows.join(in_group.select("group_segment_id", "member_segment_id", *[pl.col(f).alias(f"in_group.{f}") for f in group_features]),
                     on=["group_segment_id", "member_segment_id"], how="left")
    candidates = features + [f"in_group.{f}" for f in group_features]
    test = pl.Series(in_test_half(rows["group_segment_id"]))
    dev_rhos, test_rhos = (group_spearman(part, "group_id", "influence", candidates, min_size)
                           for part in (rows.filter(~test), rows.filter(test)))
    means = {f: float(np.mean(v)) for f, v in dev_rhos.items() if v}
    best = max(means, key=means.get)  # the best single feature, chosen on dev groups and reported on test ones
    return {"ref_influence_best_feature": best, "groups_evaluated": len(dev_rhos[best]) + len(test_rhos[best]),
            "dev": {"ref_influence_spearman": means[best]},
            "test": {"ref_influence_spearman": float(np.mean(test_rhos[best])) if test_rhos[best] else float("nan")},
            "influence_spearman_by_feature": means}


def group_spearman(rows: pl.DataFrame, group: str, truth: str, columns: list[str], min_size: int) -> dict[str, list[float]]:
    """Per column, the Spearman correlation with `truth` inside each group of at least `min_size` rows.

    A column constant within a group (or missing: null counts as 0) scores 0 there.
    Shared by the reference scores and by `eval_graph`, so both average the same way.
    """
    out: dict[str, list[float]] = {column: [] for column in columns}
    for _, members in rows.group_by(group, maintain_order=True):
        if members.height < min_size:
            continue
        for column in columns:
            values = members[column].fill_null(0).to_numpy()
            rho = 0.0 if np.ptp(values) == 0 else spearmanr(members[truth].to_numpy(), values).statistic
            out[column].append(float(rho))
    return out


@dataclass
class ColdTask:
    """The cold-start protocol: per segment, its train images and which cold images it interacted with."""

    cold_ids: list[str]
    segments: list[str]  # segment ids with >= 1 train interaction and some, not all, cold images as positives
    train_images: list[list[str]]  # per segment
    positives: np.ndarray  # (segments, cold) bool


def cold_task(interactions: pl.DataFrame, split: pl.DataFrame) -> ColdTask:
    cold_ids = split.filter(pl.col("split") == "cold")["image_id"].to_list()
    cold_index = {img: i for i, img in enumerate(cold_ids)}
    labelled = interactions.join(split, on="image_id")
    segments, train_images, masks = [], [], []
    for (segment,), rows in labelled.group_by("segment_id", maintain_order=True):
        train = rows.filter(pl.col("split") == "train")["image_id"].unique(maintain_order=True).to_list()
        positives = [cold_index[i] for i in rows.filter(pl.col("split") == "cold")["image_id"].unique().to_list()]
        if not train or not positives or len(positives) == len(cold_ids):
            continue
        mask = np.zeros(len(cold_ids), dtype=bool)
        mask[positives] = True
        segments.append(segment), train_images.append(train), masks.append(mask)
    return ColdTask(cold_ids, segments, train_images, np.array(masks, dtype=bool).reshape(-1, len(cold_ids)))


def restrict(task: ColdTask, rows: Sequence[int]) -> ColdTask:
    """The task over the segments at `rows` only (the same cold images)."""
    rows = list(rows)
    return ColdTask(task.cold_ids, [task.segments[k] for k in rows], [task.train_images[k] for k in rows],
                    task.positives[rows].reshape(-1, len(task.cold_ids)))


def summarise_auc(task: ColdTask, scores: np.ndarray, name: str) -> dict:
    """Mean AUC over segments of scores (segments, cold), overall and per kind."""
    aucs: dict[str, list[float]] = {"ind": [], "grp": []}
    for k, segment in enumerate(task.segments):
        aucs[segment[:3]].append(auc(scores[k], task.positives[k]))
    every = aucs["ind"] + aucs["grp"]
    return {name: float(np.mean(every)), f"{name}_individuals": float(np.mean(aucs["ind"] or [np.nan])),
            f"{name}_groups": float(np.mean(aucs["grp"] or [np.nan]))}


def cold_auc(interactions: pl.DataFrame, split: pl.DataFrame, histograms: dict[str, np.ndarray]) -> dict:
    task = cold_task(interactions, split)
    cold_hist = np.stack([histograms[i] for i in task.cold_ids])
    scores = np.stack([-np.abs(cold_hist - np.mean([histograms[i] for i in train], axis=0)).sum(axis=1) for train in task.train_images])
    return summarise_auc(task, scores, "ref_cold_auc") | {"cold_auc_segments": len(task.segments)}


def popularity(interactions: pl.DataFrame, split: pl.DataFrame, k: int) -> dict:
    train_ids = split.filter(pl.col("split") == "train")["image_id"]
    train = interactions.join(pl.DataFrame({"image_id": train_ids}), on="image_id", how="semi")
    learn, held = ranking.temporal_holdout(train)
    index = {img: i for i, img in enumerate(train_ids.to_list())}
    counts = np.zeros(len(index))
    np.add.at(counts, [index[i] for i in learn["image_id"].to_list()], 1)
    out = {}
    for kind in ("ind", "grp"):
        held_k = held.filter(pl.col("segment_id").str.starts_with(kind))
        segments = held_k["segment_id"].unique(maintain_order=True).to_list()
        seen_by = {s: [index[i] for i in g["image_id"].to_list()] for (s,), g in learn.filter(pl.col("segment_id").is_in(segments)).group_by("segment_id")}
        held_by = {s: [index[i] for i in g["image_id"].to_list()] for (s,), g in held_k.group_by("segment_id")}
        segments = [s for s in segments if s in seen_by]
        scores = np.broadcast_to(counts, (len(segments), len(counts)))
        metrics = ranking.rank_metrics(scores, [np.array(seen_by[s]) for s in segments], [np.array(held_by[s]) for s in segments], k)
        name = "individuals" if kind == "ind" else "groups"
        out |= {f"ref_popularity_{m}_{name}": v for m, v in metrics.items() if m != "segments"}
    return out


def image_histograms(images_dir: Path, tables_dir: Path) -> dict[str, np.ndarray]:
    images = pl.read_parquet(tables_dir / c.IMAGES_FILE).filter(pl.col("path") != "")
    return {row["image_id"]: colour_histogram(np.asarray(Image.open(images_dir / row["path"]).convert("RGB")))
            for row in images.iter_rows(named=True)}


def run(cfg: ReferenceConfig, paths: Paths) -> dict:
    """The baselines' scores on the world of `paths.truth`, from the pipeline's tables, split, centrality and raw images."""
    truth = load_truth(paths.truth)
    events = scan_parts(paths.tables / c.EVENTS_DIR, c.EVENTS_SCHEMA).collect()
    interactions = ranking.segment_interactions(events)
    split = pl.read_parquet(paths.split)
    out = {"world": truth.world, "world_sha256": truth.world_sha256}
    out |= influence_spearman(truth, paths.centrality, cfg.min_group_size)
    out |= cold_auc(interactions, split, image_histograms(paths.raw, paths.tables))
    out |= popularity(interactions, split, cfg.k)
    return out
