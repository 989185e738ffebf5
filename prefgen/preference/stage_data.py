"""Step 1 inputs from the pipeline's tables: dense ids, train-split interactions, member features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from prefgen.data import contract as c
from prefgen.data.split import training_events
from prefgen.preference.train import TrainData

_INDIVIDUAL_IMAGE_TYPES = ("click", "repost", "comment", "favorite")


@dataclass
class Indexed:
    data: TrainData
    users: list[str]  # raw individual ids, by dense index
    items: list[str]  # raw image ids (train split), by dense index
    groups: list[str]  # raw group ids, by dense index
    feature_names: list[str]


def standardise_log(x: np.ndarray) -> np.ndarray:
    """log1p of non-negative counts/centralities, then zero mean and unit variance per column."""
    x = np.log1p(np.maximum(x, 0))
    return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)


def _index(values: list[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(values)}


def _member_features(members: pl.DataFrame, centrality_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Global and in-group centrality of each member row, log-scaled and standardised."""
    glob = pl.read_parquet(centrality_dir / "individuals.parquet").drop("individual_id")
    local = pl.read_parquet(centrality_dir / "group_members.parquet")
    local_names = [f for f in local.columns if f not in ("group_segment_id", "member_segment_id")]
    rows = members.with_columns(pl.format("ind:{}", "member_id").alias("segment_id"), pl.format("grp:{}", "group_id").alias("group_segment_id"))
    rows = rows.join(glob, on="segment_id", how="left", maintain_order="left")
    rows = rows.join(local.rename({f: f"in_group.{f}" for f in local_names}).rename({"member_segment_id": "segment_id"}),
                     on=["group_segment_id", "segment_id"], how="left", maintain_order="left")
    names = [f for f in rows.columns if f not in ("group_id", "member_id", "since", "segment_id", "group_segment_id")]
    return standardise_log(rows.select(names).fill_null(0).to_numpy().astype(np.float64)), names


def load(tables_dir: Path, split_path: Path, centrality_dir: Path) -> Indexed:
    events = training_events(tables_dir, split_path).select("actor_id", "type", "target_id").collect()
    members = pl.read_parquet(tables_dir / c.MEMBERSHIPS_FILE).sort("group_id", "member_id")
    train_items = sorted(pl.read_parquet(split_path).filter(pl.col("split") == "train")["image_id"].to_list())
    clicks = events.filter(pl.col("type").is_in(_INDIVIDUAL_IMAGE_TYPES))
    group_clicks = events.filter(pl.col("type") == "group_click")
    users = sorted(set(clicks["actor_id"]) | set(members["member_id"]))
    groups = sorted(set(members["group_id"]) | set(group_clicks["actor_id"]))
    u, i, g = _index(users), _index(train_items), _index(groups)
    user_items = np.unique(np.array([(u[a], i[b]) for a, b in clicks.select("actor_id", "target_id").iter_rows()], dtype=np.int64).reshape(-1, 2), axis=0)
    group_items = np.unique(np.array([(g[a], i[b]) for a, b in group_clicks.select("actor_id", "target_id").iter_rows()], dtype=np.int64).reshape(-1, 2), axis=0)
    member_rows = np.array([(g[a], u[b]) for a, b in members.select("group_id", "member_id").iter_rows()], dtype=np.int64).reshape(-1, 2)
    features, names = _member_features(members, centrality_dir)
    data = TrainData(len(users), len(train_items), len(groups), user_items, group_items, member_rows, features)
    return Indexed(data, users, train_items, groups, names)
