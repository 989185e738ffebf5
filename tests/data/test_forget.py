"""`forget`: a deletion request removes an individual and stays honoured on later ingests."""

from datetime import UTC, datetime

import polars as pl
import pytest

from prefgen.config import IngestConfig
from prefgen.data import contract as c
from prefgen.data.forget import ForgetError, forget, subject_hash
from prefgen.data.ingest import run
from tests.conftest import event, write_jsonl

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def _world(raw):
    ev = lambda i, t, a, b: event(event_id=f"e{i}", type=t, actor_id=a, target_id=b)  # noqa: E731
    write_jsonl(raw / "a.jsonl", [
        ev(1, "click", "alice", "img1"), ev(2, "follow", "alice", "bob"), ev(3, "follow", "bob", "alice"),
        ev(4, "join", "alice", "g1"), ev(5, "join", "bob", "g1"), ev(6, "click", "bob", "img1"),
        ev(7, "group_click", "alice", "img2"),  # a *group* called alice: not the individual
        ev(8, "follow", "carol", "bob"),
        '{"event_id": "bad", "actor_id": "alice", "type": "click"',  # quarantined line naming alice
    ])


def test_forget_removes_the_individual_everywhere(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _world(raw)
    run(IngestConfig(), raw, out, now=NOW)
    record = forget(out, "alice", requested_by="dpo@example.org", now=NOW)
    assert (record["events_removed"], record["follows_removed"], record["memberships_removed"], record["quarantine_removed"]) == (4, 2, 1, 1)
    events = pl.read_parquet(out / c.EVENTS_DIR)
    assert sorted(events["event_id"].to_list()) == ["e5", "e6", "e7", "e8"]
    assert pl.read_parquet(out / c.FOLLOWS_FILE).rows() == [("carol", "bob", events.filter(event_id="e8")["ts"][0])]
    assert pl.read_parquet(out / c.MEMBERSHIPS_FILE)["member_id"].to_list() == ["bob"]
    assert not list((out / c.QUARANTINE_DIR).glob("*.parquet"))
    log = pl.read_parquet(out / c.FORGOTTEN_FILE).row(0, named=True)
    assert log["subject_sha256"] == subject_hash("alice") and log["requested_by"] == "dpo@example.org"
    assert "alice" not in (out / c.FORGOTTEN_FILE).read_bytes().decode("latin-1")


def test_later_ingests_keep_the_individual_out(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _world(raw)
    run(IngestConfig(), raw, out, now=NOW)
    forget(out, "alice", requested_by="dpo", now=NOW)
    write_jsonl(raw / "b.jsonl", [event(event_id="n1", actor_id="alice"), event(event_id="n2", type="follow", actor_id="dan", target_id="alice"),
                                  event(event_id="n3", actor_id="dan")])
    counts = run(IngestConfig(), raw, out, now=NOW)
    assert (counts["read"], counts["forgotten"], counts["added"]) == (3, 2, 1)
    individual = pl.read_parquet(out / c.EVENTS_DIR).filter(pl.col("type") != "group_click")
    assert "alice" not in individual["actor_id"].to_list() + individual["target_id"].to_list()


def test_forget_refuses_bad_requests(tmp_path):
    with pytest.raises(ForgetError, match="no ingested tables"):
        forget(tmp_path, "alice", requested_by="x")
    with pytest.raises(ForgetError, match="empty"):
        forget(tmp_path, " ", requested_by="x")
