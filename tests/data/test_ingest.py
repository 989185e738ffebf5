"""Stage `ingest` end to end on small raw logs: quarantine, dedup, incrementality, tables."""

import gzip
import json
from datetime import UTC, datetime

import polars as pl
import pytest

from prefgen.data import contract as c
from prefgen.data.config import IngestConfig
from prefgen.data.ingest import IngestError, run
from tests.conftest import event, write_jsonl

NOW = datetime(2026, 11, 27, tzinfo=UTC)
CFG = IngestConfig(chunk_bytes=4096)


def ingest(raw, out, **kwargs):
    return run(kwargs.pop("cfg", CFG), raw, out, now=NOW, **kwargs)


def quarantine(out) -> pl.DataFrame:
    return pl.read_parquet(out / c.QUARANTINE_DIR).sort("line")


def events(out) -> pl.DataFrame:
    return pl.read_parquet(out / c.EVENTS_DIR).sort("event_id")


# One raw line per malformed-row kind, each with the reason it must be quarantined for.
BAD_LINES = [
    ('{"event_id": "b1", "ts": ', "bad_json"),
    ('["b2", "click"]', "not_object"),
    (b'{"event_id": "b3", "ts": "2026-03-01T10:00:00Z", "actor_id": "u\xff", "type": "click", "target_id": "i"}', "invalid_utf8"),
    (event(event_id="b4", actor_id=...), "missing_field"),
    (event(event_id="b5", actor_id=None), "missing_field"),
    (event(event_id="b6", actor_id=["u1"]), "wrong_type"),
    (event(event_id="b7", ts=True), "wrong_type"),
    (event(event_id="b8", target_id={"id": 1}), "wrong_type"),
    (event(event_id="b9", actor_id=1.5), "wrong_type"),
    (event(event_id="b10", type=3), "wrong_type"),
    (event(event_id="b11", type="like"), "unknown_type"),
    (event(event_id="b12", ts="2026-02-30T00:00:00Z"), "bad_timestamp"),
    (event(event_id="b13", ts="2026-03-01T10:00:00"), "bad_timestamp"),
    (event(event_id="b14", ts=946684799999), "timestamp_out_of_range"),
    (event(event_id="b15", ts="2031-01-01T00:00:00Z"), "timestamp_out_of_range"),
    (event(event_id="b16", actor_id=""), "empty_id"),
    (event(event_id="b17", target_id="i" * 257), "id_too_long"),
    (event(event_id="b18", actor_id="u\u0007"), "bad_id"),
    (event(event_id="b19", type="follow", target_id="u1"), "self_follow"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES, ids=[f"{r}-{i}" for i, (_, r) in enumerate(BAD_LINES)])
def test_each_malformed_kind_is_quarantined_without_losing_its_neighbours(tmp_path, line, reason):
    raw = write_jsonl(tmp_path / "raw" / "day.jsonl", [event(event_id="ok1"), line, event(event_id="ok2")]).parent
    counts = ingest(raw, tmp_path / "out")
    assert counts["read"] == 3 and counts["valid"] == 2 and counts["quarantined"] == 1
    assert counts["quarantined_by_reason"] == {reason: 1}
    bad = quarantine(tmp_path / "out").row(0, named=True)
    assert (bad["source"], bad["line"], bad["reason"]) == ("day.jsonl", 2, reason)
    assert bad["detail"] and bad["raw"]
    assert events(tmp_path / "out")["event_id"].to_list() == ["ok1", "ok2"]


def test_all_kinds_in_one_file_across_chunks(tmp_path):
    rows = []
    for i, (line, _) in enumerate(BAD_LINES):
        rows += [event(event_id=f"ok{i}", actor_id=f"u{i}"), line]
    rows += [""] * 3 + [event(event_id="last")]  # blank lines are not rows
    write_jsonl(tmp_path / "raw" / "day.jsonl", rows * 1)
    counts = ingest(tmp_path / "raw", tmp_path / "out", cfg=IngestConfig(chunk_bytes=1024))
    assert counts["read"] == 2 * len(BAD_LINES) + 1
    assert counts["quarantined"] == len(BAD_LINES)
    lines = quarantine(tmp_path / "out")["line"].to_list()
    assert lines == [2 * i + 2 for i in range(len(BAD_LINES))]
    assert quarantine(tmp_path / "out")["reason"].to_list() == [r for _, r in BAD_LINES]


def test_ids_and_timestamps_are_normalised(tmp_path):
    rows = [event(event_id=7, actor_id=42, ts=1772359200000), event(event_id="s", ts="1772359200000", actor_id="1.5"),
            event(event_id="o", ts="2026-03-01T12:00:00+02:00")]
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    assert ingest(tmp_path / "raw", tmp_path / "out")["quarantined"] == 0
    got = events(tmp_path / "out")
    assert got["event_id"].to_list() == ["7", "o", "s"]
    assert got["actor_id"].to_list() == ["42", "u1", "1.5"]
    assert {t.isoformat() for t in got["ts"].to_list()} == {"2026-03-01T10:00:00+00:00"}
    assert got.schema["ts"] == pl.Datetime("ms", "UTC")


def test_csv_and_gzip(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    text = ("event_id,ts,actor_id,type,target_id\n"
            "c1,2026-03-01T10:00:00Z,u1,click,i1\n"
            "c2,2026-03-01T10:00:00Z,u1\n"
            '"c3","2026-03-01T10:00:00Z","u,2",click,i1\n'
            "c4,2026-03-01T10:00:00Z,u3,jump,i1\n")
    with gzip.open(raw / "batch.csv.gz", "wt") as handle:
        handle.write(text)
    write_jsonl(raw / "more.jsonl.gz", [])
    with gzip.open(raw / "more.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(event(event_id="j1")) + "\n")
    counts = ingest(raw, tmp_path / "out")
    assert (counts["read"], counts["valid"], counts["quarantined"]) == (5, 3, 2)
    assert counts["quarantined_by_reason"] == {"bad_csv": 1, "unknown_type": 1}
    assert events(tmp_path / "out")["actor_id"].to_list() == ["u1", "u,2", "u1"]
    assert quarantine(tmp_path / "out")["line"].to_list() == [3, 5]


def test_reingest_adds_nothing_and_reads_no_file(tmp_path):
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event(event_id=f"e{i}") for i in range(5)] + ["{bad"])
    first = ingest(tmp_path / "raw", tmp_path / "out")
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*.parquet")}
    second = ingest(tmp_path / "raw", tmp_path / "out")
    assert first["added"] == 5 and first["quarantined"] == 1
    assert second["files"] == {"read": 0, "unchanged": 1, "unreadable": 0, "ignored": 0, "skipped": 0}
    assert second["read"] == 0 and second["tables"]["events"] == 5 and second["tables"]["quarantine"] == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*.parquet")} == snapshot


def test_overlapping_files_are_deduplicated_by_event_id(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw / "a.jsonl", [event(event_id="e1"), event(event_id="e2"), event(event_id="e2")])
    first = ingest(raw, tmp_path / "out")
    assert (first["added"], first["duplicates"]) == (2, 1)
    write_jsonl(raw / "b.jsonl", [event(event_id="e2"), event(event_id="e3")])
    second = ingest(raw, tmp_path / "out")
    assert second["files"]["read"] == 1 and second["files"]["unchanged"] == 1
    assert (second["read"], second["added"], second["duplicates"]) == (2, 1, 1)
    assert events(tmp_path / "out")["event_id"].to_list() == ["e1", "e2", "e3"]
    sources = pl.read_parquet(tmp_path / "out" / c.SOURCES_FILE).sort("source")
    assert sources["duplicates"].to_list() == [1, 1]


def test_a_changed_file_is_read_again_and_only_its_new_rows_added(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw / "a.jsonl", [event(event_id="e1")])
    ingest(raw, tmp_path / "out")
    write_jsonl(raw / "a.jsonl", [event(event_id="e1"), event(event_id="e2")])
    counts = ingest(raw, tmp_path / "out")
    assert (counts["read"], counts["added"], counts["duplicates"]) == (2, 1, 1)


def test_follows_and_memberships_as_of_the_latest_event(tmp_path):
    ev = lambda i, t, a, b, ts: event(event_id=f"e{i}", type=t, actor_id=a, target_id=b, ts=ts)  # noqa: E731
    rows = [ev(1, "follow", "u1", "u2", "2026-01-01T00:00:00Z"), ev(2, "unfollow", "u1", "u2", "2026-01-02T00:00:00Z"),
            ev(3, "follow", "u1", "u3", "2026-01-01T00:00:00Z"), ev(4, "follow", "u2", "u1", "2026-01-05T00:00:00Z"),
            ev(5, "join", "u1", "g1", "2026-01-01T00:00:00Z"), ev(6, "leave", "u1", "g1", "2026-01-03T00:00:00Z"),
            ev(7, "join", "u1", "g1", "2026-01-04T00:00:00Z"), ev(8, "join", "u2", "g1", "2026-01-01T00:00:00Z"),
            ev(9, "leave", "u2", "g1", "2026-01-02T00:00:00Z")]
    # Out of time order across files: state follows ts, not file order.
    write_jsonl(tmp_path / "raw" / "b.jsonl", rows[:4])
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows[4:])
    ingest(tmp_path / "raw", tmp_path / "out")
    follows = pl.read_parquet(tmp_path / "out" / c.FOLLOWS_FILE)
    assert follows.select("follower_id", "followee_id").rows() == [("u1", "u3"), ("u2", "u1")]
    members = pl.read_parquet(tmp_path / "out" / c.MEMBERSHIPS_FILE)
    assert members.rows() == [("g1", "u1", datetime(2026, 1, 4, tzinfo=UTC))]


def test_images_manifest(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw / "images.jsonl", [{"image_id": "i1", "path": "px/i1.png", "caption": "a red circle"},
                                       {"image_id": "i2", "path": "", "caption": "no pixels"},
                                       {"image_id": "i3", "path": "../escape.png", "caption": "x"},
                                       {"image_id": "i1", "path": "px/other.png", "caption": "again"},
                                       {"image_id": 4, "owner_id": 17},
                                       {"image_id": "i5", "owner_id": ""}])
    counts = ingest(raw, tmp_path / "out")
    assert (counts["images"]["read"], counts["images"]["quarantined"], counts["images"]["duplicates"]) == (6, 2, 1)
    assert counts["quarantined_by_reason"] == {"bad_path": 1, "empty_id": 1}
    images = pl.read_parquet(tmp_path / "out" / c.IMAGES_FILE).sort("image_id")
    assert images.select("image_id", "path", "caption", "owner_id").rows() == [
        ("4", "", "", "17"), ("i1", "px/i1.png", "a red circle", None), ("i2", "", "no pixels", None)]


def test_every_table_has_the_contract_schema(tmp_path):
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event(), event(event_id="e2", type="join", target_id="g"), "{"])
    write_jsonl(tmp_path / "raw" / "images.jsonl", [{"image_id": "i1", "path": "", "caption": ""}])
    ingest(tmp_path / "raw", tmp_path / "out")
    out = tmp_path / "out"
    for path, schema in [(out / c.EVENTS_DIR, c.EVENTS_SCHEMA), (out / c.QUARANTINE_DIR, c.QUARANTINE_SCHEMA),
                         (out / c.FOLLOWS_FILE, c.FOLLOWS_SCHEMA), (out / c.MEMBERSHIPS_FILE, c.MEMBERSHIPS_SCHEMA),
                         (out / c.IMAGES_FILE, c.IMAGES_SCHEMA), (out / c.SOURCES_FILE, c.SOURCES_SCHEMA)]:
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        import pyarrow.parquet as pq
        assert pq.read_schema(files[0]).remove_metadata().equals(schema), path


def test_missing_raw_folder_is_fatal_and_writes_nothing(tmp_path):
    with pytest.raises(IngestError, match="raw log folder not found"):
        ingest(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("hello")
    with pytest.raises(IngestError, match="no raw log files"):
        ingest(tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_gzip_is_quarantined_and_retried_later(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw / "good.jsonl", [event()])
    payload = gzip.compress("".join(json.dumps(event(event_id=f"x{i}")) + "\n" for i in range(2000)).encode())
    (raw / "broken.jsonl.gz").write_bytes(payload[: len(payload) // 2])
    counts = ingest(raw, tmp_path / "out")
    assert counts["unreadable_files"] == ["broken.jsonl.gz"] and counts["files"]["unreadable"] == 1
    # A file is not a row: the run's row counts hold only the readable file's.
    assert (counts["read"], counts["quarantined"], counts["added"]) == (1, 0, 1)
    assert quarantine(tmp_path / "out").select("source", "line", "reason").rows() == [("broken.jsonl.gz", 0, "unreadable_file")]
    with gzip.open(raw / "broken.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(event(event_id="e2")) + "\n")
    again = ingest(raw, tmp_path / "out")
    assert again["files"]["read"] == 1 and again["added"] == 1


def test_a_killed_run_leaves_no_visible_partial_state(tmp_path):
    """Leftover staging from a killed run is ignored by readers and cleared by the rerun."""
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event(event_id=f"e{i}") for i in range(3)])
    first = ingest(tmp_path / "raw", tmp_path / "out")
    stale = tmp_path / "out" / f".staging-{first['batch']}"
    stale.mkdir()
    (stale / "events-00000000.parquet").write_bytes(b"half a file")
    (tmp_path / "out" / c.EVENTS_DIR / ".part-x.parquet.tmp").write_bytes(b"half")
    write_jsonl(tmp_path / "raw" / "b.jsonl", [event(event_id="e9")])
    counts = ingest(tmp_path / "raw", tmp_path / "out")
    assert counts["tables"]["events"] == 4
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "out").iterdir())


def test_other_files_are_ignored_and_listed(tmp_path):
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event()])
    (tmp_path / "raw" / "README.md").write_text("notes")
    (tmp_path / "raw" / ".hidden.jsonl").write_text("{")
    counts = ingest(tmp_path / "raw", tmp_path / "out")
    assert counts["ignored_files"] == ["README.md"] and counts["quarantined"] == 0
