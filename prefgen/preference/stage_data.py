"""Step 1 inputs from the pipeline's tables: dense ids, train-split interactions, member features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from prefgen.data import contract as c
from prefgen.data.split import training_events
from prefgen.paths import Paths
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.task import TrainData

_INDIVIDUAL_IMAGE_TYPES = ("click", "repost", "comment", "favorite")
SEMANTIC_FILE = "semantic.parquet"  # the visual features' semantic vectors (prefgen/vision/features.py)


@dataclass
class Indexed:
    data: TrainData
    users: list[str]  # raw individual ids, by dense index
    items: list[str]  # raw image ids (train split), by dense index
    groups: list[str]  # raw group ids, by dense index
    items_without_features: int = 0  # train images with no semantic vector (unreadable image): learned id only
    members_without_centrality: int = 0  # member rows absent from the social graph: zero features
    follows_outside: int = 0  # follow edges with an end that neither clicked nor joins a group: not used


def standardise_log(x: np.ndarray) -> np.ndarray:
    """Log-scale non-negative counts/centralities per column, then zero mean and unit variance.

    A column with no zeros is logged as is; one with zeros as log1p(x / smallest
    positive value). Why not plain log1p: centralities such as PageRank are all
    far below 1, where log1p(x) is x and would leave their heavy tail unlogged.
    """
    x = np.maximum(x, 0)
    positive = np.where(x > 0, x, np.inf).min(axis=0)
    positive = np.where(np.isfinite(positive), positive, 1.0)
    logged = np.where((x > 0).all(axis=0), np.log(np.where(x > 0, x, 1.0)), np.log1p(x / positive))
    return (logged - logged.mean(axis=0)) / np.maximum(logged.std(axis=0), 1e-9)


def _index(values: list[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(values)}


def _member_features(members: pl.DataFrame, centrality_dir: Path) -> tuple[np.ndarray, list[str], int]:
    """Global and in-group centrality of each member row, log-scaled and standardised; and how many
    member rows had no centrality row (members absent from the social graph: zeros, counted)."""
    glob = pl.read_parquet(centrality_dir / "individuals.parquet").drop("individual_id")
    local = pl.read_parquet(centrality_dir / "group_members.parquet")
    local_names = [f for f in local.columns if f not in ("group_segment_id", "member_segment_id")]
    rows = members.with_columns(pl.format("ind:{}", "member_id").alias("segment_id"), pl.format("grp:{}", "group_id").alias("group_segment_id"))
    rows = rows.join(glob, on="segment_id", how="left", maintain_order="left")
    rows = rows.join(local.rename({f: f"in_group.{f}" for f in local_names}).rename({"member_segment_id": "segment_id"}),
                     on=["group_segment_id", "segment_id"], how="left", maintain_order="left")
    names = [f for f in rows.columns if f not in ("group_id", "member_id", "since", "segment_id", "group_segment_id")]
    absent = int(rows.select(pl.all_horizontal(pl.col(n).is_null() for n in names if not n.startswith("in_group."))).to_series().sum())
    return standardise_log(rows.select(names).fill_null(0).to_numpy().astype(np.float64)), names, absent


def item_features(path: Path | None, items: list[str]) -> tuple[np.ndarray | None, int]:
    """(semantic vectors of `items` in order, how many lack one: zeros, so their learned δ_i carries them)."""
    if path is None or not path.is_file():
        return None, len(items)
    table = pl.read_parquet(path).select("image_id", "vector")
    found = dict(zip(table["image_id"].to_list(), table["vector"].to_list()))
    width = len(next(iter(found.values()))) if found else 0
    matrix = np.zeros((len(items), width), dtype=np.float32)
    missing = 0
    for row, item in enumerate(items):
        if item in found:
            matrix[row] = found[item]
        else:
            missing += 1
    return matrix, missing


def _follows(tables_dir: Path, index: dict[str, int]) -> tuple[np.ndarray, int]:
    """(follower, followee) dense index pairs among the known individuals, self-follows dropped; and how many
    edges had an end outside them (people with no clicks and no groups carry no taste to share)."""
    follows = pl.read_parquet(tables_dir / c.FOLLOWS_FILE, columns=["follower_id", "followee_id"])
    follows = follows.filter(pl.col("follower_id") != pl.col("followee_id"))
    keys = pl.DataFrame({"id": list(index), "row": list(index.values())}, schema={"id": pl.String, "row": pl.Int64})
    pairs = (follows.join(keys.rename({"id": "follower_id", "row": "a"}), on="follower_id", how="left", maintain_order="left")
             .join(keys.rename({"id": "followee_id", "row": "b"}), on="followee_id", how="left", maintain_order="left"))
    known = pairs.drop_nulls(["a", "b"])
    return known.select("a", "b").to_numpy().astype(np.int64).reshape(-1, 2), pairs.height - known.height


def load_for(cfg: TrainGraphConfig, paths: Paths) -> Indexed:
    """The train_graph stage's inputs from the pipeline's `paths` (item_features false: learned image ids only)."""
    return load(paths.tables, paths.split, paths.centrality, paths.visual / SEMANTIC_FILE if cfg.item_features else None)


def load(tables_dir: Path, split_path: Path, centrality_dir: Path, semantic_path: Path | None = None) -> Indexed:
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
    features, names, absent = _member_features(members, centrality_dir)
    semantic, missing = item_features(semantic_path, train_items)
    follows, outside = _follows(tables_dir, u)
    data = TrainData(len(users), len(train_items), len(groups), user_items, group_items, member_rows, features, semantic, follows, names)
    return Indexed(data, users, train_items, groups, missing, absent, outside)
