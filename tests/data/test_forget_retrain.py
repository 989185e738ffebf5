"""After `forget` and a retrain, everything built equals a retrain on the raw log without the person's lines.

Pipeline A ingests a tiny synthetic world, builds its visual features (persisted, as in
a real project), forgets one individual who owns images, clicks, follows and belongs to
groups, then retrains. Pipeline B removes that individual's lines from the same raw log
by the rule docs/DATA.md states (written here, apart from forget.py) and runs the same
stages. Tables, split, centrality, visual features and Step 1's outputs must be equal;
every stage runs on one thread with fixed seeds, so Step 1's files are compared byte
for byte.
"""

import json
import shutil
from pathlib import Path

import polars as pl

from prefgen.data import contract as c
from tests.tiny_pipeline import run_command, stage_commands, tiny_params, write_params

# The persisted features a request finds.
BEFORE_FORGET = ["ingest", "split", "prepare_images", "image_store", "train_clip", "visual_features"]
RETRAIN = ["ingest", "split", "prepare_images", "image_store", "centrality", "train_clip", "visual_features", "train_graph"]
INDIVIDUAL_ACTOR = {"click", "repost", "comment", "favorite", "follow", "unfollow", "join", "leave"}
ON_IMAGE = {"click", "repost", "comment", "favorite", "group_click"}
FOLLOW = {"follow", "unfollow"}


def _pick_individual(tables: Path) -> str:
    """The individual owning the most images among those who click, follow, are followed and belong to a group."""
    events = pl.read_parquet(tables / c.EVENTS_DIR)
    clickers = set(events.filter(pl.col("type") == "click")["actor_id"])
    follows = pl.read_parquet(tables / c.FOLLOWS_FILE)
    members = set(pl.read_parquet(tables / c.MEMBERSHIPS_FILE)["member_id"])
    eligible = clickers & set(follows["follower_id"]) & set(follows["followee_id"]) & members
    owners = pl.read_parquet(tables / c.IMAGES_FILE).filter(pl.col("owner_id").is_in(list(eligible)))
    return owners.group_by("owner_id").len().sort(["len", "owner_id"], descending=[True, False])["owner_id"][0]


def _copy_without(raw: Path, dest: Path, who: str) -> set[str]:
    """The raw log without `who`'s lines (forget.images: drop); returns the ids of their images."""
    shutil.copytree(raw, dest)
    manifest = [json.loads(line) for line in (raw / "images.jsonl").read_text().splitlines()]
    owned = {row["image_id"] for row in manifest if row["owner_id"] == who}
    (dest / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest if r["owner_id"] != who))
    for path in sorted(raw.glob("events-*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        kept = [r for r in rows if not ((r["type"] in INDIVIDUAL_ACTOR and r["actor_id"] == who)
                                        or (r["type"] in FOLLOW and r["target_id"] == who)
                                        or (r["type"] in ON_IMAGE and r["target_id"] in owned))]
        (dest / path.name).write_text("".join(json.dumps(r) + "\n" for r in kept))
    return owned


def _tables(data: Path) -> dict[str, pl.DataFrame]:
    tables = data / "02_tables"
    return {"events": pl.read_parquet(tables / c.EVENTS_DIR).drop("source", "line", "batch").sort("event_id"),
            "follows": pl.read_parquet(tables / c.FOLLOWS_FILE), "memberships": pl.read_parquet(tables / c.MEMBERSHIPS_FILE),
            "images": pl.read_parquet(tables / c.IMAGES_FILE).drop("source", "line").sort("image_id"),
            "split": pl.read_parquet(data / "03_features" / "split.parquet")}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _run(stages: list[str]) -> None:
    commands = stage_commands()
    for stage in stages:
        run_command(commands[stage])


def test_a_retrain_after_forget_equals_one_on_the_log_without_the_person(tmp_path, monkeypatch):
    params = tiny_params()
    a, b = tmp_path / "a", tmp_path / "b"
    write_params(a, params), write_params(b, params)
    monkeypatch.chdir(a)
    _run(["synth", *BEFORE_FORGET])
    who = _pick_individual(a / params["paths"]["tables"])
    owned = _copy_without(a / params["paths"]["raw"], b / params["paths"]["raw"], who)
    assert owned
    run_command(f"python -m prefgen forget {who} --params params.yaml --by dpo")
    _run(RETRAIN)
    monkeypatch.chdir(b)
    _run(RETRAIN)

    got, expected = _tables(a / "data"), _tables(b / "data")
    for name in expected:
        assert got[name].equals(expected[name]), f"{name}:\n{got[name]}\n!=\n{expected[name]}"
    assert who not in set(got["images"]["owner_id"]) and not owned & set(got["split"]["image_id"])
    features = "data/03_features"
    prepared_a, prepared_b = (root / params["paths"]["prepared"] for root in (a, b))
    assert sorted(p.relative_to(prepared_a) for p in prepared_a.rglob("*.png")) == \
        sorted(p.relative_to(prepared_b) for p in prepared_b.rglob("*.png")), "prepared images of the forgotten person remain"
    assert pl.read_parquet(prepared_a / "manifest.parquet").equals(pl.read_parquet(prepared_b / "manifest.parquet"))
    assert _files(a / features / "centrality") == _files(b / features / "centrality")
    for part in ("semantic", "style", "colour", "skipped"):
        name = f"visual/{part}.parquet"
        got_rows, expected_rows = pl.read_parquet(a / features / name), pl.read_parquet(b / features / name)
        assert not owned & set(got_rows["image_id"]), f"{part}: features of the forgotten images remain"
        assert got_rows.equals(expected_rows), part
    graph_a, graph_b = _files(a / params["paths"]["graph"]), _files(b / params["paths"]["graph"])
    assert f"ind:{who}" not in set(pl.read_parquet(a / params["paths"]["graph"] / "segments.parquet")["segment_id"])
    assert graph_a.keys() == graph_b.keys() and "vectors.safetensors" in graph_a
    for name in graph_b:
        assert graph_a[name] == graph_b[name], f"Step 1's {name} differs"
