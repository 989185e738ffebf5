"""Stage `ingest` against hostile input: no file may stop or hang the run (docs/DATA.md, "Malformed rows")."""

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

import polars as pl
import pytest

from prefgen.data import contract as c
from prefgen.data.config import IngestConfig
from prefgen.data.ingest import IngestError
from tests.conftest import event, write_jsonl
from tests.data.test_ingest import events, ingest, quarantine

DEEP = "[" * 10_000 + "]" * 10_000


def reasons(out) -> list[tuple[int, str]]:
    return quarantine(out).select("line", "reason").rows()


def test_json_nested_ten_thousand_deep_in_any_field_is_one_bad_row(tmp_path):
    rows = [event(event_id="ok1"), '{"extra": ' + DEEP + ', "event_id": "x"}', '{"event_id": ' + DEEP + "}", DEEP,
            event(event_id="ok2")]
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    counts = ingest(tmp_path / "raw", tmp_path / "out", cfg=IngestConfig(chunk_bytes=2**16))
    assert (counts["read"], counts["added"], counts["quarantined"]) == (5, 2, 3)
    assert reasons(tmp_path / "out") == [(2, "bad_json"), (3, "bad_json"), (4, "bad_json")]
    assert "nested too deeply" in quarantine(tmp_path / "out")["detail"][0]


@pytest.mark.parametrize("ts", [8_300_000_000_000_000, "8300000000000000", -8_300_000_000_000_000, 2**63 - 1])
def test_ts_beyond_the_datetime_range_is_out_of_range_not_a_crash(tmp_path, ts):
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event(event_id="far", ts=ts), event(event_id="ok")])
    counts = ingest(tmp_path / "raw", tmp_path / "out")
    assert counts["quarantined_by_reason"] == {"timestamp_out_of_range": 1} and counts["added"] == 1
    assert str(ts) in quarantine(tmp_path / "out")["detail"][0]


def write_csv(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


HEADER = "event_id,ts,actor_id,type,target_id\n"
ROW = "{},2026-03-01T10:00:00Z,u1,click,i1\n"


def test_csv_field_over_the_csv_modules_limit_is_one_bad_row(tmp_path):
    huge = "c2,2026-03-01T10:00:00Z," + "u" * 200_000 + ",click,i1\n"  # one line, within max_line_bytes
    multi = 'c4,2026-03-01T10:00:00Z,"' + "v\n" * 70_000 + 'v",click,i1\n'  # short lines, one huge quoted field
    write_csv(tmp_path / "raw" / "a.csv", HEADER + ROW.format("c1") + huge + ROW.format("c3") + multi)
    counts = ingest(tmp_path / "raw", tmp_path / "out", cfg=IngestConfig(chunk_bytes=2**20))
    assert events(tmp_path / "out")["event_id"].to_list() == ["c1", "c3"]
    bad = quarantine(tmp_path / "out").filter(pl.col("detail").str.contains("field limit"))
    assert bad.select("line", "reason").rows()[0] == (3, "bad_csv") and bad.height == 2
    assert counts["read"] == counts["added"] + counts["duplicates"] + counts["quarantined"]


def corrupt_gzip(rows: int = 500) -> bytes:
    """A sound gzip member, then one whose deflate body is damaged: zlib fails after rows were read."""
    sound = gzip.compress("".join(json.dumps(event(event_id=f"x{i}")) + "\n" for i in range(rows)).encode())
    damaged = bytearray(gzip.compress(json.dumps(event(event_id="y")).encode() + b"\n"))
    for i in range(10, 18):  # the first bytes after the 10-byte gzip header: the deflate block header
        damaged[i] ^= 0xFF
    with pytest.raises(zlib.error):
        gzip.decompress(sound + bytes(damaged))
    return sound + bytes(damaged)


def test_gzip_with_a_corrupt_body_is_an_unreadable_file_recorded_once_and_retried(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw / "good.jsonl", [event()])
    (raw / "broken.jsonl.gz").write_bytes(corrupt_gzip())
    first = ingest(raw, tmp_path / "out")
    assert first["unreadable_files"] == ["broken.jsonl.gz"] and first["added"] == 1
    assert first["tables"]["events"] == 1  # nothing of the broken file's first half was kept
    again = ingest(raw, tmp_path / "out")
    assert again["unreadable_files"] == ["broken.jsonl.gz"] and again["files"]["unreadable"] == 1
    assert reasons(tmp_path / "out") == [(0, "unreadable_file")]  # retried, but recorded once
    with gzip.open(raw / "broken.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(event(event_id="e2")) + "\n")
    fixed = ingest(raw, tmp_path / "out")
    assert fixed["files"]["read"] == 1 and fixed["added"] == 1 and fixed["unreadable_files"] == []


def test_a_file_failing_midway_leaves_nothing_half_written_and_loses_no_other_file(tmp_path):
    """b's first chunks were staged before its gzip ended early: they go, a's rows (and its bad line) stay."""
    raw = tmp_path / "raw"
    write_jsonl(raw / "a.jsonl", [event(event_id="a1"), "{bad"])
    payload = gzip.compress("".join(json.dumps(event(event_id=f"b{i}")) + "\n" for i in range(2000)).encode())
    (raw / "b.jsonl.gz").write_bytes(payload[: len(payload) * 3 // 4])
    counts = ingest(raw, tmp_path / "out")
    assert counts["unreadable_files"] == ["b.jsonl.gz"]
    assert events(tmp_path / "out")["event_id"].to_list() == ["a1"]
    assert quarantine(tmp_path / "out").select("source", "line", "reason").rows() == [
        ("b.jsonl.gz", 0, "unreadable_file"), ("a.jsonl", 2, "bad_json")]


# Run as root, a chmod 000 file is still readable: the child drops to `nobody` (os.setuid) after a first
# ingest of a readable copy has imported every module it needs (the interpreter's own files may be root-only).
INGEST_AS_NOBODY = """
import json, os, sys
from pathlib import Path
from prefgen.data.config import IngestConfig
from prefgen.data.ingest import run
if os.geteuid() == 0:
    run(IngestConfig(), Path("warm"), Path("warm-out"))
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
print(json.dumps(run(IngestConfig(), Path("raw"), Path("out")), default=str))
"""


def test_a_file_the_process_may_not_open_is_unreadable_not_fatal():
    work = Path(tempfile.mkdtemp(prefix="prefgen-perm-"))  # not under pytest's root-only tmp_path
    try:
        work.chmod(0o777)
        write_jsonl(work / "raw" / "a.jsonl", [event(event_id="ok")])
        write_jsonl(work / "warm" / "a.jsonl", [event(event_id="ok"), "{"])
        write_jsonl(work / "raw" / "secret.jsonl", [event(event_id="hidden")])
        (work / "raw" / "secret.jsonl").chmod(0o000)
        done = subprocess.run([sys.executable, "-c", INGEST_AS_NOBODY], cwd=work, capture_output=True, text=True,
                              timeout=120, env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])})
        assert done.returncode == 0, done.stderr[-2000:]
        counts = json.loads(done.stdout.strip().splitlines()[-1])
        assert counts["unreadable_files"] == ["secret.jsonl"] and counts["added"] == 1
        bad = pl.read_parquet(work / "out" / c.QUARANTINE_DIR).row(0, named=True)
        assert (bad["source"], bad["reason"]) == ("secret.jsonl", "unreadable_file") and "Permission" in bad["detail"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_utf8_bom_is_not_part_of_the_first_row(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl").write_bytes(bom + json.dumps(event(event_id="j1")).encode() + b"\n")
    write_csv(tmp_path / "raw" / "b.csv", bom + (HEADER + ROW.format("c1") + ROW.format("c2")).encode())
    with gzip.open(tmp_path / "raw" / "c.csv.gz", "wb") as handle:
        handle.write(bom + (HEADER + ROW.format("z1")).encode())
    counts = ingest(tmp_path / "raw", tmp_path / "out")
    assert counts["quarantined"] == 0
    assert events(tmp_path / "out")["event_id"].to_list() == ["c1", "c2", "j1", "z1"]


def test_a_csv_without_a_header_quarantines_every_row_as_missing_header(tmp_path):
    write_csv(tmp_path / "raw" / "a.csv", ROW.format("c1") + ROW.format("c2"))
    counts = ingest(tmp_path / "raw", tmp_path / "out")
    assert (counts["read"], counts["added"], counts["quarantined"]) == (2, 0, 2)
    assert reasons(tmp_path / "out") == [(1, "missing_header"), (2, "missing_header")]
    assert quarantine(tmp_path / "out")["raw"][0].startswith("c1,")


def test_ids_keep_their_exact_text_and_non_integral_numbers_are_wrong_type(tmp_path):
    rows = ['{"event_id": 12345678901234567890.0, "ts": "2026-03-01T10:00:00Z", "actor_id": "u", "type": "click", "target_id": "i"}',
            '{"event_id": 2.0000000000000001, "ts": "2026-03-01T10:00:00Z", "actor_id": "u", "type": "click", "target_id": "i"}',
            '{"event_id": "e", "ts": "2026-03-01T10:00:00Z", "actor_id": 1e3, "type": "click", "target_id": "i"}',
            '{"event_id" : "f", "ts": "2026-03-01T10:00:00Z", "actor_id": "u", "type": "click", "target_id": -0.0}',
            '{"event_id": 123456789012345678901234567890, "ts": "2026-03-01T10:00:00Z", "actor_id": 2, "type": "click", "target_id": "i"}',
            json.dumps(event(event_id="2"))]
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    counts = ingest(tmp_path / "raw", tmp_path / "out")
    assert reasons(tmp_path / "out") == [(1, "wrong_type"), (2, "wrong_type"), (3, "wrong_type"), (4, "wrong_type")]
    assert counts["duplicates"] == 0
    assert events(tmp_path / "out")["event_id"].to_list() == ["123456789012345678901234567890", "2"]


def test_a_big_integer_id_keeps_its_digits_on_the_slow_path_too(tmp_path):
    """A broken neighbour sends its lines through the line-by-line parser."""
    big = '{"event_id": 123456789012345678901234567890, "ts": 1772359200000, "actor_id": 7, "type": "click", "target_id": "i"}'
    write_jsonl(tmp_path / "raw" / "a.jsonl", [big, "{broken"])
    ingest(tmp_path / "raw", tmp_path / "out")
    assert events(tmp_path / "out").select("event_id", "actor_id").rows() == [("123456789012345678901234567890", "7")]


def test_a_conflicting_duplicate_is_counted_apart_and_the_first_row_wins(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw / "a.jsonl", [event(event_id="e1", actor_id="u1"), event(event_id="e1", actor_id="u1"),
                                  event(event_id="e1", actor_id="mallory"), event(event_id="e2")])
    first = ingest(raw, tmp_path / "out")
    assert (first["added"], first["duplicates"], first["conflicts"]) == (2, 2, 1)
    write_jsonl(raw / "b.jsonl", [event(event_id="e2", type="repost"), event(event_id="e2")])
    second = ingest(raw, tmp_path / "out")
    assert (second["added"], second["duplicates"], second["conflicts"]) == (0, 2, 1)
    assert second["events"]["conflicts"] == 1
    assert events(tmp_path / "out").select("event_id", "actor_id", "type").rows() == [("e1", "u1", "click"), ("e2", "u1", "click")]
    sources = pl.read_parquet(tmp_path / "out" / c.SOURCES_FILE).sort("source")
    assert sources.select("source", "duplicates", "conflicts").rows() == [("a.jsonl", 2, 1), ("b.jsonl", 2, 1)]


def test_out_naming_a_file_is_a_named_error(tmp_path):
    """An IngestError: the CLI prints it as one line (tests/test_cli.py)."""
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event()])
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(IngestError, match="is a file, not a folder"):
        ingest(tmp_path / "raw", tmp_path / "out")
    with pytest.raises(IngestError, match="cannot create output folder"):
        ingest(tmp_path / "raw", tmp_path / "out" / "below")


def test_fifo_socket_and_outside_symlink_are_skipped_with_a_reason_never_read(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw / "a.jsonl", [event()])
    os.mkfifo(raw / "pipe.jsonl")  # opening it for reading would block until a writer comes
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(raw / "sock.jsonl"))
    write_jsonl(tmp_path / "outside" / "secret.jsonl", [event(event_id="secret")])
    (raw / "link.jsonl").symlink_to(tmp_path / "outside" / "secret.jsonl")
    (raw / "inside.jsonl").symlink_to(raw / "a.jsonl")
    result: dict = {}

    def ingest_in_thread():
        try:
            result.update(ingest(raw, tmp_path / "out"))
        except Exception as err:  # reported below, in the test's own thread
            result["error"] = err

    worker = threading.Thread(target=ingest_in_thread, daemon=True)
    worker.start()
    worker.join(timeout=60)
    server.close()
    if worker.is_alive():  # unblock the reader so the test process can exit
        with open(raw / "pipe.jsonl", "wb"):
            pass
        pytest.fail("ingest hung on a FIFO")
    assert "error" not in result, result.get("error")
    assert result["skipped_files"] == {"link.jsonl": "symlink_outside_raw", "pipe.jsonl": "not_regular_file",
                                       "sock.jsonl": "not_regular_file"}
    assert result["files"]["skipped"] == 3 and "secret" not in events(tmp_path / "out")["event_id"].to_list()
    assert result["added"] == 1 and result["duplicates"] == 1  # the inside link is read: the same event again


@pytest.mark.parametrize("name", ["a.jsonl", "a.csv", "a.jsonl.gz"])
def test_a_line_longer_than_a_chunk_is_quarantined_without_losing_its_neighbours(tmp_path, name):
    cfg = IngestConfig(chunk_bytes=1024, max_line_bytes=600)
    long_line = json.dumps(event(event_id="long", actor_id="u" * 5000)) if "jsonl" in name else "long," + "x" * 5000
    medium = json.dumps(event(event_id="mid", actor_id="m" * 700)) if "jsonl" in name else "mid," + "y" * 700
    line = (lambda i: json.dumps(event(event_id=f"e{i}"))) if "jsonl" in name else (lambda i: ROW.format(f"e{i}").strip())
    lines = ([] if "jsonl" in name else [HEADER.strip()]) + [line(1), long_line, line(2), medium, line(3), long_line]
    text = ("\n".join(lines) + "\n").encode()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / name).write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    counts = ingest(tmp_path / "raw", tmp_path / "out", cfg=cfg)
    offset = 0 if "jsonl" in name else 1
    assert reasons(tmp_path / "out") == [(2 + offset, "line_too_long"), (4 + offset, "line_too_long"),
                                         (6 + offset, "line_too_long")]
    assert events(tmp_path / "out")["event_id"].to_list() == ["e1", "e2", "e3"]
    assert counts["read"] == 6 and len(quarantine(tmp_path / "out")["raw"][0]) <= 2000


def test_a_second_ingest_into_the_same_folder_waits_for_the_lock_or_fails_naming_it(tmp_path):
    """Another process holds the output folder's lock with its staging in progress (a real second process)."""
    out = tmp_path / "out"
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event()])
    out.mkdir()
    holder = ("import fcntl, sys, time, pathlib\n"
              "out = pathlib.Path(sys.argv[1]); handle = open(out / '.ingest.lock', 'a+b')\n"
              "fcntl.flock(handle, fcntl.LOCK_EX); (out / '.staging-other').mkdir(exist_ok=True)\n"
              "print('locked', flush=True); time.sleep(float(sys.argv[2]))\n"
              "(out / '.staging-other').rmdir()\n")
    other = subprocess.Popen([sys.executable, "-c", holder, str(out), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "locked"
        with pytest.raises(IngestError, match=f"another ingest is writing to {out}"):
            ingest(tmp_path / "raw", out, cfg=IngestConfig(lock_timeout_s=0.5))
        assert (out / ".staging-other").is_dir() and not (out / c.EVENTS_DIR).exists()
    finally:
        other.kill()
        other.wait()
    brief = subprocess.Popen([sys.executable, "-c", holder, str(out), "1"], stdout=subprocess.PIPE, text=True)
    assert brief.stdout.readline().strip() == "locked"
    counts = ingest(tmp_path / "raw", out, cfg=IngestConfig(lock_timeout_s=30))  # waits for it, then runs
    assert brief.wait(timeout=30) == 0 and counts["added"] == 1
