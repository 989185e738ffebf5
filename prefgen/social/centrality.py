"""Stage `centrality`: social features of the follow graph, per individual and per (group, member).

The graph is directed, follower -> followee, simple (self-loops and duplicate
edges are dropped; ingest never writes either). Node index = rank of the raw id
in sorted order. Features, all float64, unnormalised unless said:

- `in_degree`, `out_degree`: number of followers / followees.
- `pagerank`: PageRank (Page, Brin, Motwani, Winograd 1999) with damping
  `cfg.damping`, rank flowing along follow edges (being followed raises it),
  uniform teleport, dangling nodes spreading their rank uniformly; sums to 1.
  Same definition as `networkx.pagerank`; power iteration (scipy sparse) to an
  L1 change below 1e-13.
- `betweenness`: directed shortest-path betweenness, sum over ordered pairs
  s != v != t of sigma_st(v) / sigma_st (Brandes 2001, "A faster algorithm for
  betweenness centrality"), by igraph. Exact for n <= `cfg.exact_threshold`;
  above it estimated from k = `cfg.pivots` sources drawn uniformly without
  replacement (seed `cfg.seed`; Brandes & Pich 2007, "Centrality estimation in
  large networks"), scaled exactly as `networkx.betweenness_centrality(G, k,
  normalized=False)` scales (networkx >= 3.5): (n-1)/k for non-pivots and
  (n-1)/(k-1) for pivots, the unbiased estimate given whether v was drawn.
- `harmonic`: harmonic closeness of incoming paths, H(v) = sum over u != v of
  1/d(u, v), the distance FROM u TO v along follow edges, 1/inf = 0 (Marchiori &
  Latora 2000; Boldi & Vigna 2014, "Axioms for centrality"). This is what
  `networkx.harmonic_centrality(G)` computes on the directed graph. Exact below
  the threshold (igraph, mode "in"); above it estimated from the same pivots as
  betweenness, H(v) ~ (n-1)/k * sum over pivots u of 1/d(u, v) for non-pivots
  and (n-1)/(k-1) * ... for pivots (same conditional scaling as betweenness),
  the pivot distances found by a bit-parallel multi-source BFS (graph.py).
- `kcore`: core number of the graph taken as undirected (u-v joined when either
  follows the other, counted once; Batagelj & Zaversnik 2003), by level-synchronous
  peeling in numpy. Equals `networkx.core_number(G.to_undirected())`.

Implementation, chosen by measurement at 1M nodes / 10M edges on 2 cores
(benchmarks/centrality.py; timings in BENCHMARKS.md, "Centrality against networkx").
Betweenness: igraph's Brandes restricted to the sources, split over `cfg.threads`
forked workers (igraph holds the GIL; networkit has no sources-restricted Brandes).
Harmonic: igraph's Brandes does not expose its BFS distances, so instead of one
more BFS per pivot all pivots advance together in a bit-parallel BFS. PageRank:
scipy power iteration. k-core: numpy peeling. Nodes are relabelled by degree for
cache locality (the BFS-bound features gain).

Group features are the same six inside the subgraph induced by the group's
members. All groups are computed at once on one disjoint union whose nodes are
(group, member) rows and whose edges are follow edges between two members of
the same group (a join of the edge list with the membership table on both
endpoints). Degrees, betweenness, harmonic closeness and core numbers of a
disjoint union are those of each part, since no path crosses parts. PageRank on
the union teleports and spreads dangling rank over all N nodes, not over the
group's n_g: within a group the solution is still proportional to
(I - d P^T)^-1 1 (P the group's substochastic transition matrix), so
dividing by the group's total gives exactly the group-alone PageRank. The
exact/sampled choice is per group (size vs `cfg.exact_threshold`).

Activity counts in individuals.parquet: `<type>s_made` = events of that type
(click, repost, comment, favorite) by the individual; `<type>s_received` = those
events, by anyone, on images whose `owner_id` is the individual (an owner's own
activity on their image counts in both; `group_click` is a group's and is not
counted).

Split discipline: centrality is a training input (Step 1 reads it), so it reads
events only through `training_events` (prefgen/data/split.py), like every
trainer: an interaction with a val or cold image (or one the split file does not
list) is dropped before anything is counted, and the individual index is built
from what remains, so such an interaction changes no output at all (not even
PageRank, whose teleport spreads over every indexed node). Follow, unfollow,
join and leave events, the follows and memberships tables and image ownership
(`images.owner_id`) are not interactions with an image and are all read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from prefgen.data import contract as c
from prefgen.data.split import training_events
from prefgen.data.tables import read_table, write_table_atomic
from prefgen.social.config import CentralityConfig
from prefgen.social.graph import (
    block_sums,
    build_igraph,
    chunks,
    core_numbers,
    igraph_map,
    multi_source_harmonic,
    pagerank,
    pivot_plan,
    simple_edges,
)

FEATURES = ("in_degree", "out_degree", "pagerank", "betweenness", "harmonic", "kcore")
ACTIVITY_TYPES = ("repost", "comment", "favorite", "click")
ACTIVITY = tuple(f"{t}s_{way}" for way in ("made", "received") for t in ACTIVITY_TYPES)
INDIVIDUALS_FILE = "individuals.parquet"
GROUP_MEMBERS_FILE = "group_members.parquet"

_FEATURE_FIELDS = [pa.field(f, pa.float64(), nullable=False) for f in FEATURES]
INDIVIDUALS_SCHEMA = pa.schema(
    [pa.field("segment_id", pa.string(), nullable=False), pa.field("individual_id", pa.string(), nullable=False),
     *_FEATURE_FIELDS, *[pa.field(a, pa.int64(), nullable=False) for a in ACTIVITY]]
)
GROUP_MEMBERS_SCHEMA = pa.schema(
    [pa.field("group_segment_id", pa.string(), nullable=False), pa.field("member_segment_id", pa.string(), nullable=False),
     pa.field("group_size", pa.int64(), nullable=False), *_FEATURE_FIELDS]
)

OnFeature = Callable[[str, float], None]


class _Timer:
    def __init__(self, on_feature: OnFeature | None, prefix: str = "") -> None:
        self.seconds: dict[str, float] = {}
        self.on_feature, self.prefix = on_feature, prefix

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        if self.on_feature is not None:
            self.on_feature(self.prefix + name, self.seconds[name])


def individual_features(src: np.ndarray, dst: np.ndarray, n_nodes: int, cfg: CentralityConfig,
                        on_feature: OnFeature | None = None) -> dict[str, np.ndarray]:
    """FEATURES of each node 0..n_nodes-1 of the follow graph src[k] -> dst[k]."""
    src, dst = simple_edges(src, dst, n_nodes)
    return compute(n_nodes, src, dst, np.zeros(n_nodes, np.int64), cfg, on_feature)[0]


def group_member_features(src: np.ndarray, dst: np.ndarray, n_nodes: int, groups: np.ndarray, members: np.ndarray,
                          cfg: CentralityConfig, on_feature: OnFeature | None = None) -> dict[str, np.ndarray]:
    """FEATURES of members[r] inside the subgraph induced by group groups[r]'s members, per row r."""
    return _group_compute(src, dst, n_nodes, groups, members, cfg, on_feature)[0]


def _group_compute(src, dst, n_nodes, groups, members, cfg, on_feature=None) -> tuple[dict[str, np.ndarray], dict]:
    src, dst = simple_edges(src, dst, n_nodes)
    groups, members = np.asarray(groups, np.int64).ravel(), np.asarray(members, np.int64).ravel()
    if members.size and (members.min() < 0 or members.max() >= n_nodes):
        raise ValueError(f"members must be node indexes in [0, {n_nodes})")
    rows = pl.DataFrame({"g": groups, "m": members})
    nodes = rows.unique().sort("g", "m").with_row_index("node")
    node_of_row = rows.join(nodes, on=["g", "m"], how="left", maintain_order="left")["node"].to_numpy().astype(np.int64)
    edges = (
        pl.DataFrame({"u": src, "v": dst})
        .join(nodes.rename({"m": "u", "node": "a"}), on="u")
        .join(nodes.rename({"m": "v", "node": "b"}), on=["g", "v"])
        .sort("a", "b")
    )
    a, b = edges["a"].to_numpy().astype(np.int64), edges["b"].to_numpy().astype(np.int64)
    features, info = compute(nodes.height, a, b, nodes["g"].to_numpy(), cfg, on_feature)
    return {f: v[node_of_row] for f, v in features.items()}, info


def compute(n: int, src: np.ndarray, dst: np.ndarray, blocks: np.ndarray, cfg: CentralityConfig,
            on_feature: OnFeature | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """FEATURES of a simple graph whose blocks (equal labels) have no edges between them.

    Each block is analysed as if alone. Returns (features, info: sizes, sampling, seconds).
    """
    timer = _Timer(on_feature)
    plan = pivot_plan(blocks, cfg.exact_threshold, cfg.pivots, cfg.seed)
    order, rank = _locality_order(n, src, dst, blocks)
    s, d = rank[src], rank[dst]
    out: dict[str, np.ndarray] = {}
    with timer("in_degree"):
        out["in_degree"] = np.bincount(dst, minlength=n).astype(np.float64)
    with timer("out_degree"):
        out["out_degree"] = np.bincount(src, minlength=n).astype(np.float64)
    with timer("pagerank"):
        pr = pagerank(n, s, d, cfg.damping)[rank]
        out["pagerank"] = pr / block_sums(pr, blocks)
    with timer("kcore"):
        out["kcore"] = core_numbers(n, s, d)[rank].astype(np.float64)
    with timer("graph"):  # igraph, for betweenness and exact harmonic closeness
        g = build_igraph(n, s, d)
    with timer("betweenness"):
        jobs = [{"sources": part, "directed": True} for part in chunks(rank[plan.sources], cfg.threads)]
        raw = np.sum(igraph_map(g, "betweenness", jobs, cfg.threads), axis=0) if jobs else np.zeros(n)
        out["betweenness"] = raw[rank] * plan.scale
    with timer("harmonic"):
        out["harmonic"] = _harmonic(g, n, s, d, plan, order, rank, cfg.threads)[rank] * plan.scale
    sampled_pivots = int(plan.sampled[plan.sources].sum())
    info = {"nodes": n, "edges": int(src.size), "mode": _mode(plan), "pivots": sampled_pivots,
            "sources": int(plan.sources.size), "sampled_blocks": plan.sampled_blocks,
            "exact_blocks": plan.exact_blocks, "seconds": timer.seconds}
    return {f: out[f] for f in FEATURES}, info


def _mode(plan) -> str:
    if plan.sampled_blocks and plan.exact_blocks:
        return "mixed"
    return "sampled" if plan.sampled_blocks else "exact"


def _locality_order(n: int, src: np.ndarray, dst: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, rank): a relabelling for cache locality. One block: by total degree,
    descending (hubs share cache lines: a faster BFS). Several: as given, since
    each block is already a contiguous node range."""
    if n == 0 or blocks.min() != blocks.max():
        identity = np.arange(n, dtype=np.int64)
        return identity, identity
    order = np.argsort(-(np.bincount(src, minlength=n) + np.bincount(dst, minlength=n)), kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    return order, rank


def _harmonic(g, n, s, d, plan, order, rank, threads) -> np.ndarray:
    """Unscaled harmonic sums in the relabelled node space: exact blocks by igraph,
    sampled blocks by the multi-source BFS from their pivots."""
    h = np.zeros(n)
    exact = rank[np.flatnonzero(~plan.sampled)]
    parts = chunks(exact, threads)
    jobs = [{"vertices": part, "mode": "in", "normalized": False} for part in parts]
    for part, values in zip(parts, igraph_map(g, "harmonic_centrality", jobs, threads), strict=True):
        h[part] = values
    pivots = np.sort(rank[plan.sources[plan.sampled[plan.sources]]])
    if pivots.size:
        h += multi_source_harmonic(n, s, d, pivots, plan.block_start[order], plan.block_end[order])
    return h


def run(cfg: CentralityConfig, tables_dir: Path, out_dir: Path, split_path: Path,
        on_feature: OnFeature | None = None) -> dict[str, Any]:
    """Read ingest's tables (image interactions: train-split images only), write
    individuals.parquet and group_members.parquet, return metrics."""
    if not split_path.is_file():
        raise FileNotFoundError(f"split file {split_path} not found: centrality counts activity only on train-split "
                                "images (run `prefgen split` first, or pass --split)")
    started = time.perf_counter()
    follows = read_table(tables_dir / c.FOLLOWS_FILE, c.FOLLOWS_SCHEMA).select("follower_id", "followee_id")
    memberships = read_table(tables_dir / c.MEMBERSHIPS_FILE, c.MEMBERSHIPS_SCHEMA).select("group_id", "member_id")
    images = read_table(tables_dir / c.IMAGES_FILE, c.IMAGES_SCHEMA).select("image_id", "owner_id")
    events = training_events(tables_dir, split_path).select("actor_id", "type", "target_id")
    index = _individual_index(follows, memberships, events, images)
    n = index.height
    src = _node_of(follows, "follower_id", index)
    dst = _node_of(follows, "followee_id", index)
    ind_feats, ind_info = compute(n, *simple_edges(src, dst, n), np.zeros(n, np.int64), cfg,
                                  _prefixed(on_feature, "individual."))
    individuals = index.with_columns(pl.format("ind:{}", "individual_id").alias("segment_id"),
                                     *[pl.Series(f, v) for f, v in ind_feats.items()])
    individuals = individuals.join(_activity(events, images), on="individual_id", how="left", maintain_order="left")
    individuals = individuals.with_columns(pl.col(list(ACTIVITY)).fill_null(0))
    rows = memberships.sort("group_id", "member_id").with_columns(
        (pl.col("group_id").rank("dense") - 1).cast(pl.Int64).alias("group"),
        pl.len().over("group_id").cast(pl.Int64).alias("group_size"))
    grp_feats, grp_info = _group_compute(src, dst, n, rows["group"].to_numpy(), _node_of(rows, "member_id", index),
                                         cfg, _prefixed(on_feature, "group."))
    group_members = rows.select(pl.format("grp:{}", "group_id").alias("group_segment_id"),
                                pl.format("ind:{}", "member_id").alias("member_segment_id"), "group_size")
    group_members = group_members.with_columns(*[pl.Series(f, v) for f, v in grp_feats.items()])
    write_table_atomic(individuals, out_dir / INDIVIDUALS_FILE, INDIVIDUALS_SCHEMA)
    write_table_atomic(group_members, out_dir / GROUP_MEMBERS_FILE, GROUP_MEMBERS_SCHEMA)
    return {"individuals": n, "follow_edges": ind_info["edges"], "groups": int(rows["group"].n_unique()),
            "memberships": rows.height, "group_edges": grp_info["edges"], "individual": ind_info,
            "group": grp_info, "seconds": time.perf_counter() - started}


def _prefixed(on_feature: OnFeature | None, prefix: str) -> OnFeature | None:
    return None if on_feature is None else (lambda name, seconds: on_feature(prefix + name, seconds))


def _individual_index(follows, memberships, events, images) -> pl.DataFrame:
    """Every individual id anywhere in the tables, sorted: row = node index."""
    col = "individual_id"
    seen = [
        follows.lazy().select(pl.col("follower_id").alias(col)),
        follows.lazy().select(pl.col("followee_id").alias(col)),
        memberships.lazy().select(pl.col("member_id").alias(col)),
        events.filter(pl.col("type").is_in(c.INDIVIDUAL_ACTOR_TYPES)).select(pl.col("actor_id").alias(col)),
        events.filter(pl.col("type").is_in(c.FOLLOW_TYPES)).select(pl.col("target_id").alias(col)),
        images.lazy().select(pl.col("owner_id").alias(col)).drop_nulls(),
    ]
    return pl.concat(seen).unique().sort(col).collect()


def _node_of(frame: pl.DataFrame, column: str, index: pl.DataFrame) -> np.ndarray:
    """Node indexes of `frame[column]` (ids all present in `index`)."""
    nodes = index.select(pl.col("individual_id").alias(column), pl.int_range(pl.len(), dtype=pl.Int64).alias("_node"))
    return frame.select(column).join(nodes, on=column, how="left", maintain_order="left")["_node"].to_numpy()


def _activity(events: pl.LazyFrame, images: pl.DataFrame) -> pl.DataFrame:
    """Per individual: ACTIVITY counts (made as actor, received as image owner)."""
    acts = events.filter(pl.col("type").is_in(ACTIVITY_TYPES))
    owners = images.lazy().drop_nulls("owner_id").unique("image_id")
    made = acts.group_by(pl.col("actor_id").alias("individual_id")).agg(
        (pl.col("type") == t).sum().cast(pl.Int64).alias(f"{t}s_made") for t in ACTIVITY_TYPES)
    received = acts.join(owners, left_on="target_id", right_on="image_id").group_by(
        pl.col("owner_id").alias("individual_id")).agg(
        (pl.col("type") == t).sum().cast(pl.Int64).alias(f"{t}s_received") for t in ACTIVITY_TYPES)
    return made.join(received, on="individual_id", how="full", coalesce=True).collect()
