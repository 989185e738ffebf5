"""Stage `split`: disjoint, complete, stable, and the trainers' filter keeps cold images out."""

import shutil
from datetime import UTC, datetime

import polars as pl
import pytest

from prefgen.data import split
from prefgen.data.config import IngestConfig, SplitConfig
from prefgen.data.ingest import run as ingest
from tests.conftest import event, write_jsonl

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def _tables(tmp_path, n_images=400):
    raw = tmp_path / "raw"
    write_jsonl(raw / "images.jsonl", [{"image_id": f"i{k}", "path": "", "caption": ""} for k in range(n_images)])
    rows = [event(event_id=f"c{k}", actor_id=f"u{k % 7}", target_id=f"i{k % n_images}") for k in range(3 * n_images)]
    rows += [event(event_id="only-event", target_id="not-in-manifest"), event(event_id="f1", type="follow", target_id="u2")]
    rows += [event(event_id=f"g{k}", type="group_click", actor_id="g1", target_id=f"i{k}") for k in range(50)]
    write_jsonl(raw / "a.jsonl", rows)
    ingest(IngestConfig(), raw, tmp_path / "tables", now=NOW)
    return tmp_path / "tables"


def test_every_image_gets_exactly_one_split_in_the_stated_shares(tmp_path):
    tables = _tables(tmp_path, 2000)
    cfg = SplitConfig(val_fraction=0.1, cold_fraction=0.2)
    counts = split.run(cfg, tables, tmp_path / "split.parquet")
    table = pl.read_parquet(tmp_path / "split.parquet")
    assert table["image_id"].is_unique().all() and table.height == 2001 == counts["images"]
    assert set(table["split"]) == {"train", "val", "cold"}
    assert abs(counts["cold"] / 2001 - 0.2) < 0.03 and abs(counts["val"] / 2001 - 0.1) < 0.03
    assert "not-in-manifest" in table["image_id"].to_list()


def test_assignment_is_stable_when_images_are_added(tmp_path):
    cfg = SplitConfig()
    small = split.assign(pl.Series([f"i{k}" for k in range(500)]), cfg)
    large = split.assign(pl.Series([f"i{k}" for k in range(1000)]), cfg)
    assert small.join(large, on="image_id", suffix="_l").filter(pl.col("split") != pl.col("split_l")).height == 0
    other_seed = split.assign(pl.Series([f"i{k}" for k in range(500)]), SplitConfig(seed=cfg.seed + 1))
    assert (other_seed["split"] != small["split"]).any()


def test_training_events_never_hold_cold_or_val_images(tmp_path):
    tables = _tables(tmp_path)
    split.run(SplitConfig(), tables, tmp_path / "split.parquet")
    table = pl.read_parquet(tmp_path / "split.parquet")
    train_ids = set(table.filter(pl.col("split") == "train")["image_id"])
    events = split.training_events(tables, tmp_path / "split.parquet").collect()
    on_images = events.filter(pl.col("type").is_in(split.IMAGE_TARGET_TYPES))
    assert set(on_images["target_id"]) <= train_ids and on_images.height > 0
    assert events.filter(pl.col("type") == "follow").height == 1  # social events pass through
    with_val = split.training_events(tables, tmp_path / "split.parquet", ("train", "val")).collect()
    assert with_val.height > events.height


def test_ingest_and_split_stages_read_and_write_their_catalogue_paths_and_name_bad_input(tmp_path, monkeypatch):
    from prefgen.params import load_params
    from prefgen.paths import Paths
    from prefgen.stages import ingest as ingest_stage, split as split_stage
    from tests.conftest import ROOT, SAMPLE_LOG

    monkeypatch.setenv("TQDM_DISABLE", "1")
    paths = Paths.from_params(load_params(ROOT / "params.yaml")).rooted(tmp_path)
    with pytest.raises(ingest_stage.USER_ERRORS, match="raw log folder not found"):
        ingest_stage.run(ingest_stage.load_config(None), paths)  # nothing in the catalogue's raw folder yet
    shutil.copytree(SAMPLE_LOG, paths.raw)
    counts = ingest_stage.run(ingest_stage.load_config({"ingest": {"chunk_bytes": 4096}}), paths)
    assert counts["events"]["read"] > 0 and (paths.tables / "sources.parquet").is_file()
    sizes = split_stage.run(split_stage.load_config({"split": {"seed": 7}}), paths)
    assert sizes["images"] == pl.read_parquet(paths.split).height > 0
    written = {p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {("data", "01_raw"), ("data", "02_tables"), ("data", "03_features")}
    (paths.tables / "sources.parquet").unlink()
    shutil.rmtree(paths.tables / "events")
    (paths.tables / "images.parquet").unlink()
    with pytest.raises(split_stage.USER_ERRORS):
        split_stage.run(split_stage.load_config(None), paths)


def _dated_tables(tmp_path):
    """Clicks over ten days (one a day per image i0..i9, image iK first clicked on day K), a follow on day 9."""
    raw = tmp_path / "raw"
    write_jsonl(raw / "images.jsonl", [{"image_id": f"i{k}", "path": "", "caption": ""} for k in range(12)])
    day = lambda d: f"2026-11-{10 + d:02d}T12:00:00Z"  # noqa: E731
    rows = [event(event_id=f"c{k}-{d}", actor_id="u1", target_id=f"i{k}", ts=day(d)) for k in range(10) for d in range(k, 10)]
    rows += [event(event_id="f9", type="follow", actor_id="u1", target_id="u2", ts=day(9)),
             event(event_id="f0", type="follow", actor_id="u2", target_id="u1", ts=day(0))]
    write_jsonl(raw / "a.jsonl", rows)
    ingest(IngestConfig(), raw, tmp_path / "tables", now=NOW)
    return tmp_path / "tables"


def test_a_holdout_window_is_never_trained_on_and_its_new_images_are_cold(tmp_path):
    tables = _dated_tables(tmp_path)
    cfg = SplitConfig(val_fraction=0.0, cold_fraction=0.0, holdout_days=3)
    counts = split.run(cfg, tables, tmp_path / "split.parquet")
    start = split.holdout_from(tmp_path / "split.parquet")
    assert start == int(datetime(2026, 11, 16, 12, tzinfo=UTC).timestamp() * 1000) == counts["holdout_from_ms"]
    table = dict(pl.read_parquet(tmp_path / "split.parquet").iter_rows())
    assert sorted(k for k, s in table.items() if s == "cold") == ["i6", "i7", "i8", "i9"]  # first clicked on days 6..9
    assert table["i10"] == "train" and counts["held_out_events"] == sum(10 - max(k, 6) for k in range(10))
    events = split.training_events(tables, tmp_path / "split.parquet").collect()
    assert events["ts"].dt.epoch("ms").max() < start and events.height > 0
    assert events.filter(pl.col("type") == "follow")["event_id"].to_list() == ["f0"]  # the window's follow is held out too
    without = split.run(SplitConfig(val_fraction=0.0, cold_fraction=0.0), tables, tmp_path / "plain.parquet")
    assert split.holdout_from(tmp_path / "plain.parquet") is None and "holdout_from_ms" not in without
    assert split.training_events(tables, tmp_path / "plain.parquet").collect().height == len(_all_events(tables))


def _all_events(tables):
    from prefgen.data import contract as c
    from prefgen.data.tables import scan_parts

    return scan_parts(tables / c.EVENTS_DIR, c.EVENTS_SCHEMA).collect()
