"""Centrality features against networkx, the group union against per-group subgraphs, and the stage I/O."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime

import networkx as nx
import numpy as np
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal
from scipy.stats import spearmanr

from prefgen.cli import app
from prefgen.data import contract as c
from prefgen.data.split import SPLIT_SCHEMA
from prefgen.data.tables import write_table_atomic
from prefgen.params import load_params
from prefgen.paths import Paths
from prefgen.social import graph
from prefgen.social.centrality import (
    ACTIVITY,
    FEATURES,
    GROUP_MEMBERS_SCHEMA,
    INDIVIDUALS_SCHEMA,
    group_member_features,
    individual_features,
    run,
)
from prefgen.social.config import CentralityConfig
from prefgen.stages import centrality as stage
from tests.conftest import ROOT

EXACT = CentralityConfig()


def heavy_tailed(n: int, avg_degree: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed Chung-Lu graph with Pareto weights (followers heavier-tailed than followees)."""
    rng = np.random.default_rng(seed)
    m = int(n * avg_degree)
    p_out, p_in = rng.pareto(2.5, n) + 1, rng.pareto(1.5, n) + 1
    src, dst = rng.choice(n, m, p=p_out / p_out.sum()), rng.choice(n, m, p=p_in / p_in.sum())
    return src, dst  # duplicates and self-loops included: the library drops them


def to_nx(n: int, src, dst) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from((int(u), int(v)) for u, v in zip(src, dst, strict=True) if u != v)
    return g


def as_array(values: dict, nodes) -> np.ndarray:
    return np.array([values[v] for v in nodes], dtype=np.float64)


def oracle(g: nx.DiGraph, nodes=None) -> dict[str, np.ndarray]:
    """The six features by networkx, exact."""
    nodes = list(g) if nodes is None else nodes
    exact = {
        "in_degree": dict(g.in_degree()),
        "out_degree": dict(g.out_degree()),
        "pagerank": nx.pagerank(g, alpha=0.85, tol=1e-13, max_iter=10_000) if len(g) else {},
        "betweenness": nx.betweenness_centrality(g, normalized=False),
        "harmonic": nx.harmonic_centrality(g),
        "kcore": nx.core_number(g.to_undirected()),
    }
    return {f: as_array(exact[f], nodes) for f in FEATURES}


def sampled_oracle(g: nx.DiGraph, pivots: list[int], nodes=None) -> dict[str, np.ndarray]:
    """networkx's pivot estimator on given pivots, scaled as networkx.betweenness_centrality(k=...) scales."""
    nodes = list(g) if nodes is None else nodes
    n, k = len(g), len(pivots)
    chosen = set(pivots)
    scale = np.array([(n - 1) / (k - 1) if v in chosen else (n - 1) / k for v in nodes])
    between = nx.betweenness_centrality_subset(g, sources=pivots, targets=list(g), normalized=False)
    harmonic = nx.harmonic_centrality(g, sources=pivots)
    return {"betweenness": as_array(between, nodes) * scale, "harmonic": as_array(harmonic, nodes) * scale}


def assert_features(got: dict, want: dict) -> None:
    for f, values in want.items():
        np.testing.assert_allclose(got[f], values, rtol=1e-9, atol=1e-11, err_msg=f)


def disconnected() -> tuple[int, np.ndarray, np.ndarray]:
    """Two random parts, a chain, a star, a 2-cycle and isolated nodes."""
    a = nx.gnp_random_graph(60, 0.05, seed=1, directed=True)
    b = nx.gnp_random_graph(40, 0.08, seed=2, directed=True)
    edges = [(u, v) for u, v in a.edges] + [(u + 60, v + 60) for u, v in b.edges]
    edges += [(100 + i, 101 + i) for i in range(9)] + [(111 + i, 110) for i in range(8)] + [(120, 121), (121, 120)]
    src, dst = np.array(edges).T
    return 130, src, dst


GRAPHS = {
    "gnp": lambda: (300, *np.array(list(nx.gnp_random_graph(300, 0.012, seed=0, directed=True).edges)).T),
    "heavy_tailed": lambda: (400, *heavy_tailed(400, 5, seed=1)),
    "disconnected": disconnected,
    "no_edges": lambda: (5, np.zeros(0, np.int64), np.zeros(0, np.int64)),
    "one_node": lambda: (1, np.zeros(0, np.int64), np.zeros(0, np.int64)),
    "empty": lambda: (0, np.zeros(0, np.int64), np.zeros(0, np.int64)),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_exact_features_equal_networkx(name):
    n, src, dst = GRAPHS[name]()
    got = individual_features(src, dst, n, EXACT)
    assert set(got) == set(FEATURES) and all(v.dtype == np.float64 and v.shape == (n,) for v in got.values())
    assert_features(got, oracle(to_nx(n, src, dst)))


def test_duplicate_edges_and_self_loops_are_dropped():
    n, src, dst = GRAPHS["gnp"]()
    noisy_src = np.r_[src, src[:50], np.arange(20)]
    noisy_dst = np.r_[dst, dst[:50], np.arange(20)]
    assert_features(individual_features(noisy_src, noisy_dst, n, EXACT), individual_features(src, dst, n, EXACT))
    with pytest.raises(ValueError, match="node indexes"):
        individual_features(np.array([0]), np.array([n]), n, EXACT)


@pytest.mark.parametrize("name", ["gnp", "heavy_tailed", "disconnected"])
def test_sampled_equals_the_networkx_estimator_on_the_same_pivots(name):
    n, src, dst = GRAPHS[name]()
    cfg = CentralityConfig(exact_threshold=0, pivots=64, seed=3)
    got = individual_features(src, dst, n, cfg)
    pivots = graph.pivot_plan(np.zeros(n, np.int64), 0, 64, 3).sources.tolist()
    assert len(pivots) == 64
    assert_features(got, sampled_oracle(to_nx(n, src, dst), pivots))
    exact = oracle(to_nx(n, src, dst))
    for f in ("in_degree", "out_degree", "pagerank", "kcore"):  # not sampled
        np.testing.assert_allclose(got[f], exact[f], rtol=1e-9, atol=1e-11)


def test_sampled_scaling_is_networkx_betweenness_with_k():
    """networkx.betweenness_centrality(k) = the subset sums on its own pivots, scaled as we scale."""
    n, src, dst = GRAPHS["heavy_tailed"]()
    g = to_nx(n, src, dst)
    nx_pivots = random.Random(11).sample(list(g.nodes()), 50)  # what networkx draws for seed=11
    want = nx.betweenness_centrality(g, k=50, normalized=False, seed=11)
    np.testing.assert_allclose(sampled_oracle(g, nx_pivots)["betweenness"], as_array(want, list(g)), rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_is_close_to_exact(seed):
    """256 pivots of 1,500 nodes. Tolerances: each estimate averages k per-source terms, so its
    relative error is about cv / sqrt(k) * sqrt(1 - k/n) ~ cv * 0.057. Harmonic terms 1/d lie in (0, 1]
    (cv < 1): ranks nearly exact (Spearman > 0.98), top-20 nodes within 5% at the median, 15% at worst.
    Betweenness dependencies are skewed (cv ~ 2-3, a few sources carry most of a node's score): Spearman
    > 0.9 over all nodes (many near-zero ties), top-20 within 15% at the median, 50% at worst. Totals sum
    n estimates, so they are within 5%. Measured: Spearman 0.94-0.96 / 0.993-0.996, top-20 medians 6-10% / 1.5-2.5%."""
    n, (src, dst) = 1500, heavy_tailed(1500, 6, seed=seed)
    exact = individual_features(src, dst, n, EXACT)
    sampled = individual_features(src, dst, n, CentralityConfig(exact_threshold=0, pivots=256, seed=seed))
    bounds = {"betweenness": (0.9, 0.15, 0.5), "harmonic": (0.98, 0.05, 0.15)}
    for f, (rho, median, worst) in bounds.items():
        top = np.argsort(-exact[f])[:20]
        rel = np.abs(sampled[f][top] - exact[f][top]) / exact[f][top]
        assert spearmanr(exact[f], sampled[f]).statistic > rho, f
        assert np.median(rel) < median and rel.max() < worst, (f, rel)
        assert abs(sampled[f].sum() / exact[f].sum() - 1) < 0.05, f


def test_sampled_is_unbiased_on_average():
    """The mean over 40 seeds of the (n-1)/k, (n-1)/(k-1) estimate approaches the exact value."""
    n, src, dst = GRAPHS["gnp"]()
    exact = individual_features(src, dst, n, EXACT)
    runs = [individual_features(src, dst, n, CentralityConfig(exact_threshold=0, pivots=60, seed=s)) for s in range(40)]
    for f in ("betweenness", "harmonic"):
        mean = np.mean([r[f] for r in runs], axis=0)
        assert abs(mean.sum() / exact[f].sum() - 1) < 0.02, f
        top = np.argsort(-exact[f])[:10]
        assert np.abs(mean[top] / exact[f][top] - 1).max() < 0.15, f


def test_many_pivot_batches_and_edge_chunks(monkeypatch):
    """600 pivots = two multi-source BFS batches (512 + 88); edges gathered 64 at a time."""
    monkeypatch.setattr(graph, "EDGE_CHUNK", 64)
    n, (src, dst) = 700, heavy_tailed(700, 4, seed=5)
    got = individual_features(src, dst, n, CentralityConfig(exact_threshold=0, pivots=600, seed=2))
    pivots = graph.pivot_plan(np.zeros(n, np.int64), 0, 600, 2).sources.tolist()
    assert_features(got, sampled_oracle(to_nx(n, src, dst), pivots))


def test_forked_workers_give_the_same_result(monkeypatch):
    n, src, dst = GRAPHS["heavy_tailed"]()
    alone = individual_features(src, dst, n, CentralityConfig(threads=1))
    monkeypatch.setattr(graph, "FORK_MIN_WORK", 0)
    assert_features(individual_features(src, dst, n, CentralityConfig(threads=2)), alone)


def membership(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping groups of sizes 1..90, rows shuffled, one row repeated."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 5, 8, 13, 30, 45, 90]
    groups = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # sparse group indexes
    members = np.concatenate([rng.choice(n, s, replace=False) for s in sizes])
    order = rng.permutation(groups.size)
    return np.r_[groups[order], groups[order][:1]], np.r_[members[order], members[order][:1]]


def test_group_member_features_equal_networkx_per_group():
    n, (src, dst) = 300, heavy_tailed(300, 8, seed=4)
    g = to_nx(n, src, dst)
    groups, members = membership(n, seed=0)
    got = group_member_features(src, dst, n, groups, members, EXACT)
    assert all(v.shape == groups.shape for v in got.values())
    for group in np.unique(groups):  # a loop over groups: fine in the oracle
        rows = np.flatnonzero(groups == group)
        sub = g.subgraph(members[rows].tolist()).copy()
        want = oracle(sub, members[rows].tolist())
        assert_features({f: v[rows] for f, v in got.items()}, want)


def test_sampled_groups_equal_networkx_on_their_pivots():
    """Groups above the threshold (30 here) sample 8 pivots each; smaller ones stay exact."""
    n, (src, dst) = 300, heavy_tailed(300, 8, seed=6)
    g = to_nx(n, src, dst)
    groups, members = membership(n, seed=1)
    cfg = CentralityConfig(exact_threshold=30, pivots=8, seed=5)
    got = group_member_features(src, dst, n, groups, members, cfg)
    pairs = sorted(set(zip(groups.tolist(), members.tolist(), strict=True)))  # the union's nodes, in order
    plan = graph.pivot_plan(np.array([p[0] for p in pairs]), 30, 8, 5)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        sub = g.subgraph(members[rows].tolist()).copy()
        if len(sub) <= 30:
            want = oracle(sub, members[rows].tolist())
        else:
            pivots = [pairs[i][1] for i in plan.sources if pairs[i][0] == group]
            assert len(pivots) == 8
            want = sampled_oracle(sub, pivots, members[rows].tolist())
        assert_features({f: v[rows] for f, v in got.items()}, want)


def write_tables(folder, extra_images=(), extra_events=()) -> None:
    ts = datetime(2026, 3, 1, tzinfo=UTC)
    follows = [("u1", "u2"), ("u2", "u3"), ("u3", "u1"), ("9", "u1"), ("10", "u2"), ("u3", "u2")]
    write_table_atomic(pl.DataFrame({"follower_id": [a for a, _ in follows], "followee_id": [b for _, b in follows],
                               "since": [ts] * len(follows)}), folder / c.FOLLOWS_FILE, c.FOLLOWS_SCHEMA)
    members = [("g1", "u1"), ("g1", "u2"), ("g1", "u3"), ("3", "u3"), ("3", "u2"), ("g2", "u5")]
    write_table_atomic(pl.DataFrame({"group_id": [g for g, _ in members], "member_id": [m for _, m in members],
                               "since": [ts] * len(members)}), folder / c.MEMBERSHIPS_FILE, c.MEMBERSHIPS_SCHEMA)
    images = [("img1", "u3"), ("img2", None), ("img3", "u10"), *extra_images]
    write_table_atomic(pl.DataFrame({"image_id": [i for i, _ in images], "path": "", "caption": "",
                               "owner_id": [o for _, o in images], "source": "images.jsonl", "line": list(range(1, len(images) + 1))},
                              schema_overrides={"owner_id": pl.String}), folder / c.IMAGES_FILE, c.IMAGES_SCHEMA)
    events = [("u1", "click", "img1"), ("u1", "click", "img1"), ("u1", "repost", "img3"), ("u2", "comment", "img1"),
              ("u2", "favorite", "img2"), ("u3", "favorite", "img1"), ("u7", "join", "g9"), ("u7", "leave", "g9"),
              ("u8", "follow", "u9"), ("u8", "unfollow", "u9"), ("g1", "group_click", "img1"), *extra_events]
    write_table_atomic(pl.DataFrame({"event_id": [f"e{i}" for i in range(len(events))], "ts": [ts] * len(events),
                               "actor_id": [a for a, _, _ in events], "type": [t for _, t, _ in events],
                               "target_id": [x for _, _, x in events], "source": "log.jsonl",
                               "line": list(range(len(events))), "batch": "b1"}),
                 folder / c.EVENTS_DIR / "part-b1.parquet", c.EVENTS_SCHEMA)


def write_split(path, splits: dict[str, str]) -> None:
    write_table_atomic(pl.DataFrame({"image_id": list(splits), "split": list(splits.values())}), path, SPLIT_SCHEMA)


ALL_TRAIN = {"img1": "train", "img2": "train", "img3": "train"}


def test_run_writes_documented_tables(tmp_path):
    tables, out = tmp_path / "tables", tmp_path / "out"
    write_tables(tables)
    write_split(tmp_path / "split.parquet", ALL_TRAIN)
    metrics = run(EXACT, tables, out, tmp_path / "split.parquet")
    ind = pl.read_parquet(out / "individuals.parquet")
    assert ind.columns == INDIVIDUALS_SCHEMA.names == ["segment_id", "individual_id", *FEATURES, *ACTIVITY]
    assert ACTIVITY == ("reposts_made", "comments_made", "favorites_made", "clicks_made",
                        "reposts_received", "comments_received", "favorites_received", "clicks_received")
    ids = ["10", "9", "u1", "u10", "u2", "u3", "u5", "u7", "u8", "u9"]  # sorted raw ids: the node order
    assert ind["individual_id"].to_list() == ids and ind["segment_id"].to_list() == [f"ind:{i}" for i in ids]
    rows = {r["individual_id"]: r for r in ind.iter_rows(named=True)}
    assert (rows["u1"]["clicks_made"], rows["u1"]["reposts_made"], rows["u2"]["comments_made"]) == (2, 1, 1)
    assert (rows["u3"]["clicks_received"], rows["u3"]["comments_received"], rows["u3"]["favorites_received"]) == (2, 1, 1)
    assert rows["u10"]["reposts_received"] == 1 and rows["u3"]["favorites_made"] == 1
    assert sum(rows["u7"][a] + rows["u9"][a] for a in ACTIVITY) == 0
    node = {v: i for i, v in enumerate(ids)}
    follows = pl.read_parquet(tables / c.FOLLOWS_FILE)
    src = np.array([node[v] for v in follows["follower_id"]])
    dst = np.array([node[v] for v in follows["followee_id"]])
    assert_features({f: ind[f].to_numpy() for f in FEATURES}, individual_features(src, dst, len(ids), EXACT))
    grp = pl.read_parquet(out / "group_members.parquet")
    assert grp.columns == GROUP_MEMBERS_SCHEMA.names == ["group_segment_id", "member_segment_id", "group_size", *FEATURES]
    assert grp.select("group_segment_id", "member_segment_id", "group_size").rows() == [
        ("grp:3", "ind:u2", 2), ("grp:3", "ind:u3", 2), ("grp:g1", "ind:u1", 3), ("grp:g1", "ind:u2", 3),
        ("grp:g1", "ind:u3", 3), ("grp:g2", "ind:u5", 1)]
    want = group_member_features(src, dst, len(ids), np.array([0, 0, 1, 1, 1, 2]),
                                 np.array([node[m] for m in ("u2", "u3", "u1", "u2", "u3", "u5")]), EXACT)
    assert_features({f: grp[f].to_numpy() for f in FEATURES}, want)
    assert grp.filter(pl.col("group_segment_id") == "grp:g1")["in_degree"].to_list() == [1.0, 2.0, 1.0]
    assert (metrics["individuals"], metrics["follow_edges"], metrics["groups"], metrics["memberships"]) == (10, 6, 3, 6)
    assert metrics["individual"]["mode"] == "exact" and metrics["individual"]["pivots"] == 0
    assert set(metrics["individual"]["seconds"]) == {*FEATURES, "graph"}
    assert not list(out.glob(".*"))  # atomic writes leave no temporary file


# Images that are not train: img4 cold, img5 val, img6 in no split. Interactions with them, by known
# individuals and by one (u20) seen nowhere else, would change counts, the node set and so PageRank.
HELD_OUT_IMAGES = [("img4", "u1"), ("img5", "u2"), ("img6", None)]
HELD_OUT_EVENTS = [("u2", "click", "img4"), ("u2", "click", "img5"), ("u3", "repost", "img5"), ("u1", "favorite", "img4"),
                   ("u20", "click", "img5"), ("u2", "comment", "img6"), ("g1", "group_click", "img4")]


def test_interactions_with_val_and_cold_images_change_nothing(tmp_path):
    split = tmp_path / "split.parquet"
    write_split(split, ALL_TRAIN | {"img4": "cold", "img5": "val"})
    write_tables(tmp_path / "train_only", extra_images=HELD_OUT_IMAGES)
    write_tables(tmp_path / "with_held_out", extra_images=HELD_OUT_IMAGES, extra_events=HELD_OUT_EVENTS)
    base = run(EXACT, tmp_path / "train_only", tmp_path / "base", split)
    held = run(EXACT, tmp_path / "with_held_out", tmp_path / "held", split)
    for name in ("individuals.parquet", "group_members.parquet"):
        assert_frame_equal(pl.read_parquet(tmp_path / "held" / name), pl.read_parquet(tmp_path / "base" / name))
    assert held["individuals"] == base["individuals"] == 10
    rows = {r["individual_id"]: r for r in pl.read_parquet(tmp_path / "held" / "individuals.parquet").iter_rows(named=True)}
    assert "u20" not in rows
    assert (rows["u2"]["clicks_made"], rows["u2"]["comments_made"], rows["u3"]["reposts_made"]) == (0, 1, 0)
    assert (rows["u1"]["favorites_made"], rows["u1"]["clicks_received"], rows["u2"]["clicks_received"]) == (0, 0, 0)
    assert (rows["u1"]["clicks_made"], rows["u3"]["clicks_received"]) == (2, 2)  # train images still count


def test_activity_moves_with_the_split(tmp_path):
    """The same tables under a split where img1 is cold: its clicks, comment and favourite stop counting."""
    write_tables(tmp_path / "tables")
    write_split(tmp_path / "split.parquet", ALL_TRAIN | {"img1": "cold"})
    run(EXACT, tmp_path / "tables", tmp_path / "out", tmp_path / "split.parquet")
    rows = {r["individual_id"]: r for r in pl.read_parquet(tmp_path / "out" / "individuals.parquet").iter_rows(named=True)}
    assert (rows["u1"]["clicks_made"], rows["u1"]["reposts_made"], rows["u2"]["comments_made"]) == (0, 1, 0)
    assert sum(rows["u3"][f"{t}s_received"] for t in ("click", "comment", "favorite")) == 0
    assert rows["u10"]["reposts_received"] == 1 and rows["u2"]["favorites_made"] == 1


def test_run_without_the_split_file_is_a_clear_error(tmp_path):
    write_tables(tmp_path / "tables")
    with pytest.raises(FileNotFoundError, match="split file .*missing.parquet not found: centrality counts activity only") as raised:
        run(EXACT, tmp_path / "tables", tmp_path / "out", tmp_path / "missing.parquet")
    assert not (tmp_path / "out").exists()
    assert isinstance(raised.value, stage.USER_ERRORS)  # the CLI's one `error:` line, not a traceback


def test_pipeline_gives_centrality_the_split():
    """DVC reruns centrality when the split changes: it depends on the file the split stage writes."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "${paths.split}" in stages["split"]["outs"] and "${paths.split}" in stages["centrality"]["deps"]


def test_cli_on_explicit_tables_needs_the_split(tmp_path, monkeypatch, capsys):
    """`prefgen centrality --tables T --centrality O` (no params.yaml here): without --split, one clear line and exit 2."""
    write_tables(tmp_path / "tables")
    write_split(tmp_path / "split.parquet", ALL_TRAIN)
    monkeypatch.chdir(tmp_path)
    base = ["centrality", "--tables", "tables", "--centrality", "out"]
    assert app(base, standalone_mode=False) == 2  # without standalone mode the exit code is returned
    err = capsys.readouterr().err
    assert err.startswith("error:") and "split" in err and not (tmp_path / "out").exists()
    assert app([*base, "--split", "split.parquet"], standalone_mode=False) in (None, 0)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["individuals"] == 10
    assert pl.read_parquet(tmp_path / "out" / "individuals.parquet").height == 10


def test_run_samples_above_the_threshold(tmp_path):
    write_tables(tmp_path / "tables")
    write_split(tmp_path / "split.parquet", ALL_TRAIN)
    metrics = run(CentralityConfig(exact_threshold=4, pivots=3), tmp_path / "tables", tmp_path / "out", tmp_path / "split.parquet")
    assert metrics["individual"]["mode"] == "sampled" and metrics["individual"]["pivots"] == 3
    assert metrics["group"]["mode"] == "exact" and metrics["group"]["sampled_blocks"] == 0


def test_run_with_only_follows(tmp_path):
    """No memberships, events or images yet: every follower/followee gets a row, no group rows."""
    ts = datetime(2026, 3, 1, tzinfo=UTC)
    write_table_atomic(pl.DataFrame({"follower_id": ["a", "b"], "followee_id": ["b", "c"], "since": [ts, ts]}),
                 tmp_path / "tables" / c.FOLLOWS_FILE, c.FOLLOWS_SCHEMA)
    write_split(tmp_path / "split.parquet", {})
    metrics = run(EXACT, tmp_path / "tables", tmp_path / "out", tmp_path / "split.parquet")
    ind = pl.read_parquet(tmp_path / "out" / "individuals.parquet")
    assert ind["individual_id"].to_list() == ["a", "b", "c"] and ind["betweenness"].to_list() == [0.0, 1.0, 0.0]
    assert ind.select(ACTIVITY).sum().row(0) == (0,) * len(ACTIVITY)
    grp = pl.read_parquet(tmp_path / "out" / "group_members.parquet")
    assert grp.height == 0 and grp.columns == GROUP_MEMBERS_SCHEMA.names
    assert metrics["groups"] == 0 and metrics["group_edges"] == 0


def test_stage_reads_and_writes_its_catalogue_paths_and_logs_progress(tmp_path):
    paths = Paths.from_params(load_params(ROOT / "params.yaml")).rooted(tmp_path)
    write_tables(paths.tables)
    write_split(paths.split, ALL_TRAIN)
    cfg = stage.load_config({"centrality": {"pivots": 64}})
    assert cfg == replace(EXACT, pivots=64)
    lines: list[str] = []
    result = stage.run(cfg, paths, lines.append)
    assert result["individuals"] == 10 and "betweenness" in result["individual"]["seconds"]
    assert pl.read_parquet(paths.centrality / "individuals.parquet").height == 10
    for f in FEATURES:
        assert any(f"individual.{f}" in line for line in lines) and any(f"group.{f}" in line for line in lines)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p == paths.split or p.is_relative_to(paths.tables) or p.is_relative_to(paths.centrality) for p in files), files
