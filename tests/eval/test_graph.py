"""eval_graph per half: each group's Spearman goes to the half of its segment id, and nowhere else."""

import json

import polars as pl

from prefgen.eval import graph
from prefgen.metrics.dev_test import half

GROUPS = [f"g{k}" for k in range(12)]


def write_world(tmp_path):
    """A truth folder with 12 groups of 3 members plus one of 2 (under min_size), and attention that ranks the members
    as their influence does in dev groups and the reverse way in test groups."""
    truth, model = tmp_path / "truth", tmp_path / "graph"
    truth.mkdir(), model.mkdir()
    (truth / "world.json").write_text(json.dumps({"world": "tiny-halves", "world_sha256": "abc"}))
    members = [(g, f"{g}m{k}", float(k)) for g in GROUPS for k in range(3)] + [("pair", "pm0", 0.0), ("pair", "pm1", 1.0)]
    pl.DataFrame(members, schema=["group_id", "member_id", "influence"], orient="row").write_parquet(truth / "group_members.parquet")
    for name in ("individuals", "groups", "images"):
        pl.DataFrame({"id": []}).write_parquet(truth / f"{name}.parquet")
    attention = [(f"grp:{g}", f"ind:{m}", w if half(f"grp:{g}") == "dev" else -w) for g, m, w in members]
    pl.DataFrame(attention, schema=["group_segment_id", "member_segment_id", "attention"], orient="row").write_parquet(
        model / "attention.parquet")
    return truth, model


def test_each_half_averages_its_own_groups_only(tmp_path):
    metrics = graph.run(*write_world(tmp_path), min_size=3)
    dev = sum(half(f"grp:{g}") == "dev" for g in GROUPS)
    assert 0 < dev < len(GROUPS)  # both halves hold groups, so the figures below can tell them apart
    assert (metrics["dev_groups"], metrics["test_groups"], metrics["groups_evaluated"]) == (dev, len(GROUPS) - dev, len(GROUPS))
    assert metrics["dev"] == {"influence_spearman": 1.0} and metrics["test"] == {"influence_spearman": -1.0}
    assert "influence_spearman" not in metrics and metrics["world"] == "tiny-halves"


def test_the_halves_split_the_member_rows_by_group_and_together_are_all_of_them(tmp_path):
    members = pl.read_parquet(write_world(tmp_path)[0] / "group_members.parquet")
    halves = graph.members_by_half(members)
    assert halves["dev"].height + halves["test"].height == members.height
    for name, rows in halves.items():
        assert {half(f"grp:{g}") for g in rows["group_id"]} == {name}


def test_a_half_with_no_group_of_min_size_has_no_figure(tmp_path):
    metrics = graph.run(*write_world(tmp_path), min_size=4)
    assert metrics["dev"] == metrics["test"] == {} and metrics["groups_evaluated"] == 0
