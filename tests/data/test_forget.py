"""`forget`: a deletion request removes an individual and stays honoured on later ingests."""

import gzip
import hashlib
import json
from datetime import UTC, datetime

import polars as pl
import pytest

from prefgen.data import contract as c
from prefgen.data.config import IngestConfig
from prefgen.data.forget import ForgetError, dropped_image_hashes, forget, forgotten_hashes, subject_hash
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


# --- The promise: after `forget`, the tables equal those built from the raw log without the person's lines. ---

def _ev(i, kind, actor, target):
    return event(event_id=f"e{i:02d}", ts=f"2026-03-01T10:{i:02d}:00Z", type=kind, actor_id=actor, target_id=target)


def _img(image_id, owner):
    return {"image_id": image_id, "path": "", "caption": f"picture {image_id}", "owner_id": owner}


FIRST = {  # alice: an actor, a followee, a member, the owner of img1 and img2; "alice" is also a group's id
    "a.jsonl": [_ev(1, "click", "alice", "img1"), _ev(2, "follow", "alice", "bob"), _ev(3, "follow", "bob", "alice"),
                _ev(4, "join", "alice", "g1"), _ev(5, "join", "bob", "g1"), _ev(6, "click", "bob", "img1"),
                _ev(7, "group_click", "alice", "img3"), _ev(8, "follow", "carol", "bob"), _ev(9, "favorite", "carol", "img2"),
                _ev(10, "group_click", "g1", "img2"), _ev(11, "click", "carol", "img3"), _ev(12, "follow", "carol", "alice"),
                _ev(13, "unfollow", "carol", "alice"), _ev(14, "repost", "bob", "img3"), _ev(15, "join", "carol", "g1"),
                _ev(16, "follow", "bob", "carol"), _ev(17, "comment", "alice", "img3")],
    "images.jsonl": [_img("img1", "alice"), _img("img2", "alice"), _img("img3", "bob"), _img("img4", None)],
}
LATER = {  # after the request; the events file sorts before the manifest that brings alice's img9
    "b.jsonl": [_ev(20, "click", "alice", "img3"), _ev(21, "click", "dan", "img9"), _ev(22, "click", "dan", "img1"),
                _ev(23, "follow", "dan", "alice"), _ev(24, "click", "dan", "img3"), _ev(25, "comment", "dan", "img2"),
                _ev(26, "follow", "dan", "bob")],
    "images2.jsonl": [_img("img9", "alice"), _img("img10", "dan")],
}


def _without(files, who, images):
    """The raw log with `who`'s lines removed, by the rule DATA.md states (independent of forget.py)."""
    owned = {r["image_id"] for rows in (FIRST | LATER).values() for r in rows if "image_id" in r and r["owner_id"] == who}
    out = {}
    for name, rows in files.items():
        if name.startswith("images"):
            out[name] = [r for r in rows if r["owner_id"] != who] if images == "drop" else \
                [r | {"owner_id": None} if r["owner_id"] == who else r for r in rows]
            continue
        kinds = c.EVENT_KINDS
        out[name] = [r for r in rows if not ((kinds[r["type"]][0] == "individual" and r["actor_id"] == who)
                                             or (r["type"] in c.FOLLOW_TYPES and r["target_id"] == who)
                                             or (images == "drop" and kinds[r["type"]][1] == "image" and r["target_id"] in owned))]
    return out


def _write(raw, files):
    for name, rows in files.items():
        write_jsonl(raw / name, rows)


def _tables(out):
    lineage = ["source", "line", "batch"]
    return {"events": pl.read_parquet(out / c.EVENTS_DIR).drop(lineage).sort("event_id"),
            "follows": pl.read_parquet(out / c.FOLLOWS_FILE), "memberships": pl.read_parquet(out / c.MEMBERSHIPS_FILE),
            "images": pl.read_parquet(out / c.IMAGES_FILE).drop("source", "line").sort("image_id")}


def _centrality_bytes(tables, work):
    from prefgen.data import split
    from prefgen.data.config import SplitConfig
    from prefgen.social import centrality
    from prefgen.social.config import CentralityConfig

    split.run(SplitConfig(val_fraction=0.0, cold_fraction=0.0), tables, work / "split.parquet")  # every image is train
    centrality.run(CentralityConfig(), tables, work / "centrality", work / "split.parquet")
    return {p.name: p.read_bytes() for p in sorted((work / "centrality").glob("*.parquet"))}


@pytest.mark.parametrize("images", ["drop", "keep"])
def test_forget_equals_never_having_ingested_the_person(tmp_path, images):
    """Forget, then ingest later files: tables and centrality equal those of the raw log without alice's lines."""
    raw, out, ref_raw, ref_out = tmp_path / "raw", tmp_path / "out", tmp_path / "ref_raw", tmp_path / "ref_out"
    _write(raw, FIRST)
    _write(ref_raw, _without(FIRST, "alice", images))
    run(IngestConfig(), raw, out, now=NOW)
    run(IngestConfig(), ref_raw, ref_out, now=NOW)
    record = forget(out, "alice", requested_by="dpo", now=NOW, images=images)
    assert record["images"] == images and record["images_removed"] == 2
    for name, expected in _tables(ref_out).items():
        assert _tables(out)[name].equals(expected), name

    _write(raw, LATER)
    _write(ref_raw, _without(LATER, "alice", images))
    counts = run(IngestConfig(), raw, out, now=NOW)
    run(IngestConfig(), ref_raw, ref_out, now=NOW)
    assert counts["forgotten"] == (6 if images == "drop" else 2)
    got, expected = _tables(out), _tables(ref_out)
    for name in expected:
        assert got[name].equals(expected[name]), f"{name}:\n{got[name]}\n!=\n{expected[name]}"
    assert "alice" not in got["images"]["owner_id"].to_list()
    assert _centrality_bytes(out, tmp_path / "a") == _centrality_bytes(ref_out, tmp_path / "b")
    stored = b"".join(p.read_bytes() for p in out.glob("forgotten*.parquet"))
    assert b"alice" not in stored and b"img1" not in stored and b"img9" not in stored


def _snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_unknown_id_is_an_error_unless_forced_and_a_repeat_changes_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from prefgen.cli import app

    monkeypatch.chdir(tmp_path)  # no params.yaml here: the tables alone
    raw, out = tmp_path / "raw", tmp_path / "out"
    _world(raw)
    run(IngestConfig(), raw, out, now=NOW)
    cli = lambda *args: CliRunner().invoke(app, ["forget", *args, "--tables", str(out), "--by", "dpo"])  # noqa: E731
    before = _snapshot(out)
    typo = cli("alcie")
    assert typo.exit_code == 2 and typo.stderr.startswith("error: no individual with that id") and "--force" in typo.stderr
    assert _snapshot(out) == before and not (out / c.FORGOTTEN_FILE).exists()

    forced = cli("zed", "--force")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["events_removed"] == 0
    assert forgotten_hashes(out) == {subject_hash("zed")}

    assert cli("alice").exit_code == 0
    done = _snapshot(out)
    again = cli("alice")
    assert again.exit_code == 0 and again.stdout == "" and len(again.stderr.splitlines()) == 1
    assert again.stderr.startswith(f"already forgotten (sha256 {subject_hash('alice')[:12]}")
    assert _snapshot(out) == done  # nothing rewritten: DVC sees no change


def test_a_manifest_failing_midway_drops_no_image_until_it_reads_whole(tmp_path):
    """alice's img9 in the first chunk of a gzip manifest whose body breaks later: the file's rows are discarded and
    so is img9's drop (the file is read again next run); once it reads, the tables equal those without alice's lines."""
    raw, out, ref_raw, ref_out = tmp_path / "raw", tmp_path / "out", tmp_path / "ref_raw", tmp_path / "ref_out"
    cfg = IngestConfig(chunk_bytes=1024)
    _write(raw, FIRST)
    run(cfg, raw, out, now=NOW)
    forget(out, "alice", requested_by="dpo", now=NOW)
    dropped = dropped_image_hashes(out)
    others = [_img(hashlib.sha256(str(i).encode()).hexdigest(), "dan") for i in range(2000)]  # hex: gzip keeps it long
    later = {"b.jsonl": LATER["b.jsonl"], "images2.jsonl": LATER["images2.jsonl"] + others}
    write_jsonl(raw / "b.jsonl", later["b.jsonl"])
    whole = gzip.compress(write_jsonl(tmp_path / "manifest.jsonl", later["images2.jsonl"]).read_bytes())
    (raw / "images2.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    counts = run(cfg, raw, out, now=NOW)
    assert counts["unreadable_files"] == ["images2.jsonl.gz"]
    assert dropped_image_hashes(out) == dropped  # img9's drop came from rows that were discarded

    (raw / "images2.jsonl.gz").write_bytes(whole)
    assert run(cfg, raw, out, now=NOW)["unreadable_files"] == []
    _write(ref_raw, _without(FIRST, "alice", "drop") | _without(later, "alice", "drop"))
    run(cfg, ref_raw, ref_out, now=NOW)
    got, expected = _tables(out), _tables(ref_out)
    for name in expected:  # the click on img9, committed while its manifest failed, went when the manifest read
        assert got[name].equals(expected[name]), f"{name}:\n{got[name]}\n!=\n{expected[name]}"
