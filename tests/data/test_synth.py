"""The synthetic world: deterministic, frozen, and shaped as the issue asks."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefgen.data import worlds
from prefgen.data.config import SynthConfig
from prefgen.data.render import HUES, PATTERNS, SHAPES
from prefgen.data.synth import pagerank, run
from prefgen.data.tastes import Tastes
from prefgen.params import load_params
from prefgen.paths import Paths
from tests.conftest import ROOT

TINY = SynthConfig(world="tiny", n_individuals=400, n_communities=4, n_groups=40, n_images=120, image_size=32,
                   clicks_per_individual=10, chunk_individuals=150)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    info = run(TINY, root / "raw", root / "truth")
    return root, info


def _load(root):
    events = pl.read_ndjson(sorted((root / "raw").glob("events-*.jsonl")))
    truth = root / "truth"
    return events, truth


def test_same_seed_same_bytes_and_hash(tiny_world, tmp_path):
    root, info = tiny_world
    again = run(TINY, tmp_path / "raw", tmp_path / "truth")
    assert again["world_sha256"] == info["world_sha256"]
    first = sorted(p.relative_to(root / "raw") for p in (root / "raw").rglob("*.jsonl"))
    assert first == sorted(p.relative_to(tmp_path / "raw") for p in (tmp_path / "raw").rglob("*.jsonl"))
    for rel in first:
        assert (root / "raw" / rel).read_bytes() == (tmp_path / "raw" / rel).read_bytes()
    other = run(replace(TINY, seed=TINY.seed + 1), tmp_path / "raw2", tmp_path / "truth2")
    assert other["world_sha256"] != info["world_sha256"]


def test_default_world_is_frozen_reproduces_and_lands_in_the_catalogue(tmp_path):
    from prefgen.stages import synth as stage

    params = load_params(ROOT / "params.yaml")
    cfg, paths = stage.load_config(params), Paths.from_params(params).rooted(tmp_path)
    assert cfg.world in worlds.FROZEN, "the default world must be frozen in prefgen/data/worlds.py"
    info = stage.run(cfg, paths)
    assert info["frozen"] is True and info["world_sha256"] == worlds.FROZEN[cfg.world]
    # The shipped catalogue names the world's own folders, so the files land where they always did.
    assert (tmp_path / "data" / "01_raw" / cfg.world / "WORLD").read_text().split() == [cfg.world, info["world_sha256"]]
    assert (tmp_path / "data" / "truth" / cfg.world / "world.json").is_file()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_dir() and p.name.startswith(".")) == []


def test_changing_a_frozen_world_is_refused_and_leaves_it_untouched(tiny_world, tmp_path, monkeypatch):
    root, info = tiny_world
    monkeypatch.setitem(worlds.FROZEN, "tiny", info["world_sha256"])
    run(TINY, tmp_path / "raw", tmp_path / "truth")
    before = sorted(p.name for p in (tmp_path / "raw").iterdir())
    with pytest.raises(worlds.FrozenWorldError, match="new name"):
        run(replace(TINY, click_noise=0.5), tmp_path / "raw", tmp_path / "truth")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "truth"]  # no temporary folder left beside them


def test_world_shape(tiny_world):
    root, info = tiny_world
    events, truth = _load(root)
    individuals = pl.read_parquet(truth / "individuals.parquet")
    community = dict(zip(individuals["individual_id"], individuals["community"]))
    follows = events.filter(pl.col("type") == "follow")
    same = np.mean([community[a] == community[b] for a, b in follows.select("actor_id", "target_id").iter_rows()])
    assert 0.7 < same < 0.9  # homophily 0.8 (+ chance matches)
    in_degree = follows.group_by("target_id").len()["len"].to_numpy()
    assert in_degree.max() > 8 * in_degree.mean()  # heavy-tailed
    sizes = pl.read_parquet(truth / "group_members.parquet").group_by("group_id").len()["len"]
    assert sizes.min() >= 2 and sizes.max() <= TINY.group_size_max
    influence = pl.read_parquet(truth / "group_members.parquet").group_by("group_id").agg(pl.col("influence").sum())
    assert np.allclose(influence["influence"].to_numpy(), 1.0)
    images = pl.read_ndjson(root / "raw" / "images.jsonl")
    attrs = pl.read_parquet(truth / "images.parquet")
    for caption, row in zip(images["caption"], attrs.iter_rows(named=True)):
        assert caption == f"a {HUES[row['hue']]} {SHAPES[row['shape']]} on a {PATTERNS[row['pattern']]} background"
    assert set(events["type"].unique()) == {"click", "repost", "comment", "favorite", "follow", "unfollow", "join", "leave", "group_click"}


def test_clicks_follow_tastes(tiny_world):
    root, _ = tiny_world
    events, truth = _load(root)
    individuals = pl.read_parquet(truth / "individuals.parquet")
    tastes = Tastes.from_flat(np.stack(individuals["taste"].to_numpy()))
    attrs = pl.read_parquet(truth / "images.parquet")
    utility = tastes.utility(attrs["hue"].to_numpy(), attrs["pattern"].to_numpy(), attrs["shape"].to_numpy())
    clicks = events.filter(pl.col("type") == "click")
    who = clicks["actor_id"].str.slice(1).cast(pl.Int64).to_numpy()
    img = clicks["target_id"].str.slice(3).cast(pl.Int64).to_numpy()
    clicked = utility[who, img].mean()
    assert clicked > utility.mean() + 1.0  # far above a random image's utility


def test_pagerank_matches_networkx():
    nx = pytest.importorskip("networkx")
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    keep = src != dst
    pairs = np.unique(np.stack([src[keep], dst[keep]], 1), axis=0)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(60))  # 10 isolated (dangling) nodes
    graph.add_edges_from(pairs.tolist())
    expected = nx.pagerank(graph, alpha=0.85, tol=1e-12)
    got = pagerank(60, pairs[:, 0], pairs[:, 1])
    assert np.allclose(got, [expected[i] for i in range(60)], atol=1e-9)


def test_raw_logs_pass_ingest_without_quarantine(tiny_world, tmp_path):
    from prefgen.data.config import IngestConfig
    from prefgen.data.ingest import run as ingest

    root, info = tiny_world
    counts = ingest(IngestConfig(), root / "raw", tmp_path / "tables")
    assert counts["quarantined"] == 0 and counts["duplicates"] == 0
    assert counts["events"]["read"] == info["events_total"]
    assert counts["tables"]["follows"] == info["follows"] and counts["tables"]["memberships"] == info["memberships"]
    assert Path(root / "raw" / "WORLD").read_text().split() == ["tiny", info["world_sha256"]]


def test_a_folder_that_is_no_world_is_never_replaced(tmp_path):
    """synth replaces the folders it writes whole: pointed at a folder of other files (say `--raw data/01_raw`, the parent
    of every world), it refuses and removes nothing."""
    shared = tmp_path / "01_raw"
    (shared / "someone-elses-logs").mkdir(parents=True)
    (shared / "someone-elses-logs" / "events.jsonl").write_text("{}\n")
    with pytest.raises(worlds.FrozenWorldError, match="no synthetic world"):
        run(replace(TINY, world="guard"), shared, tmp_path / "truth")
    assert (shared / "someone-elses-logs" / "events.jsonl").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_raw"]
