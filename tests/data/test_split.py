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
