"""Ranking protocol on the synthetic world (shared by baselines and learned models).

Held-out set: for each segment, the latest 20% (by ts, at least one) of its
interactions with `train` images; the rest is what a model may learn from.
Candidates: every `train` image the segment has not interacted with in the
learning part (full ranking). Recall@k = hits / min(k, held-out), NDCG@k with
binary gains; averaged over segments with at least one held-out and one
learning interaction. Individuals (`ind:`) and groups (`grp:`) are reported apart.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from prefgen.data.split import IMAGE_TARGET_TYPES

HOLDOUT_SHARE = 0.2


def segment_interactions(events: pl.DataFrame) -> pl.DataFrame:
    """(segment_id, image_id, ts) for image interactions; group clicks become `grp:` segments."""
    return events.filter(pl.col("type").is_in(IMAGE_TARGET_TYPES)).select(
        pl.when(pl.col("type") == "group_click").then(pl.format("grp:{}", "actor_id")).otherwise(pl.format("ind:{}", "actor_id")).alias("segment_id"),
        pl.col("target_id").alias("image_id"), "ts", "event_id")


def temporal_holdout(interactions: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(learn, held_out): the latest HOLDOUT_SHARE of each segment's interactions held out."""
    ranked = interactions.sort("ts", "event_id").with_columns(
        pos=pl.int_range(pl.len()).over("segment_id"), n=pl.len().over("segment_id"))
    cut = (pl.col("n") - (pl.col("n") * HOLDOUT_SHARE).ceil().clip(lower_bound=1))
    held = ranked.filter((pl.col("pos") >= cut) & (pl.col("n") >= 2))
    learn = ranked.filter((pl.col("pos") < cut) | (pl.col("n") < 2))
    return learn.drop("pos", "n"), held.drop("pos", "n")


def rank_metrics(scores: np.ndarray, seen: list[np.ndarray], held: list[np.ndarray], k: int) -> dict[str, float]:
    """Recall@k and NDCG@k; scores[s, i] over candidate images, seen/held are index arrays per row s.

    Ties are broken by image index (stable), the same for every model.
    """
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for s in range(scores.shape[0]):
        row = scores[s].astype(np.float64).copy()
        row[seen[s]] = -np.inf
        top = np.argsort(-row, kind="stable")[:k]
        hits = np.isin(top, held[s])
        recalls.append(hits.sum() / min(k, len(held[s])))
        ideal = discounts[: min(k, len(held[s]))].sum()
        ndcgs.append(float((hits * discounts).sum() / ideal))
    return {f"recall@{k}": float(np.mean(recalls)), f"ndcg@{k}": float(np.mean(ndcgs)), "segments": len(recalls)}

