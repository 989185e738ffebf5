"""Property-based fuzzing of stage `ingest`: Hypothesis writes whole raw folders, ingest must survive them.

Files hold BOMs, CRLF, truncated and corrupt gzip, JSON nested 10^4 deep, over-long lines and
fields, invalid UTF-8, huge and non-integral numbers, and arbitrary JSON values and CSV cells in
every field. Whatever they hold, ingest never raises, and every row read is counted exactly once:

    read == added + duplicates + forgotten + quarantined      (valid = added + duplicates + forgotten)
    conflicts <= duplicates

per file (sources.parquet against the tables) and in the run's totals (docs/DATA.md, "Counts").

Profiles, chosen by the HYPOTHESIS_PROFILE environment variable:
    ci    (default) 200 examples, derandomized (a fixed seed), no deadline: what CI runs
    long  5,000 random examples, for a local hunt:
          HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -p no:randomly tests/data/test_ingest_fuzz.py
"""

import csv
import gzip
import io
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings, strategies as st

from prefgen.data import contract as c
from prefgen.data.config import IngestConfig
from prefgen.data.ingest import run

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=200, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=5000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NOW = datetime(2026, 11, 27, tzinfo=UTC)
BOM = b"\xef\xbb\xbf"
VALID_PREFIX = "fuzz-valid-"  # event ids only the known-valid lines use

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(), st.text(max_size=12), st.sampled_from(["e1", "u1", "img1", "g1", "click", "follow"]))
JSON_VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                           max_leaves=6)
TS = st.one_of(st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01T12:00:00+02:00", "2026-02-30T00:00:00Z", "1772359200000",
                                "2026-03-01T10:00:00", 8_300_000_000_000_000, "-8300000000000000"]),
               st.integers(min_value=-(2**64), max_value=2**64))
FIELD_VALUES = {"event_id": st.one_of(st.sampled_from(["e1", "e2", "2"]), JSON_VALUES), "ts": st.one_of(TS, JSON_VALUES),
                "actor_id": st.one_of(st.sampled_from(["u1", "u2"]), JSON_VALUES),
                "type": st.one_of(st.sampled_from(list(c.EVENT_TYPES)), JSON_VALUES),
                "target_id": st.one_of(st.sampled_from(["u1", "img1", "g1"]), JSON_VALUES),
                "image_id": st.one_of(st.sampled_from(["i1", "i2", "7"]), JSON_VALUES),
                "path": st.one_of(st.sampled_from(["", "px/a.png", "../x.png", "/etc/passwd"]), JSON_VALUES),
                "caption": JSON_VALUES, "owner_id": JSON_VALUES}
NUMBER_TOKENS = st.sampled_from(["12345678901234567890.0", "2.0000000000000001", "1e400", "-0", "1" * 40, "1.5", "0.0e0",
                                 "-9223372036854775809", "8300000000000000", "NaN", "Infinity"])


def objects(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """A JSON object with any subset of the contract's fields, each holding any JSON value."""
    return st.fixed_dictionaries({}, optional={f: FIELD_VALUES[f] for f in fields} | {"extra": JSON_VALUES}).map(
        lambda obj: json.dumps(obj).encode())


def with_number(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """A valid-looking row with one field's value replaced by a raw JSON number token."""
    base = {f: "x1" for f in fields} | {"ts": "2026-03-01T10:00:00Z", "type": "click"}
    return st.tuples(st.sampled_from(fields), NUMBER_TOKENS).map(
        lambda pick: json.dumps(base | {pick[0]: "@N@"}).replace('"@N@"', pick[1]).encode())


def deep(depth: int) -> bytes:
    return b'{"event_id": "deep", "x": ' + b"[" * depth + b"]" * depth + b"}"


def valid_event(n: int, actor: str) -> dict:
    """Valid; a small id pool makes duplicates, two actors make conflicting ones."""
    return {"event_id": f"{VALID_PREFIX}{n}", "ts": "2026-03-01T10:00:00Z", "actor_id": actor, "type": "click", "target_id": "img1"}


VALID = st.builds(valid_event, st.integers(0, 4), st.sampled_from(["u1", "u2"]))


def one_field_off(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """A valid row with one field replaced by any value (or removed)."""
    base = valid_event(0, "u1") if "event_id" in fields else {"image_id": "i1", "path": "", "caption": "c"}
    return st.sampled_from(fields).flatmap(lambda f: st.one_of(FIELD_VALUES[f], st.just(...)).map(
        lambda v: json.dumps({k: x for k, x in (base | {f: v}).items() if x is not ...}).encode()))


def jsonl_lines(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    return st.one_of(objects(fields), one_field_off(fields), with_number(fields), VALID.map(lambda e: json.dumps(e).encode()),
                     st.binary(max_size=40),
                     st.sampled_from([deep(10), deep(1_000), deep(10_000), b"", b"\r", b"  ", b"[]", b"null", b'"s"']),
                     st.sampled_from([300, 3000]).map(lambda n: b'{"event_id": "' + b"x" * n + b'"}'))


@st.composite
def jsonl_file(draw, fields: tuple[str, ...]) -> bytes:
    lines = draw(st.lists(jsonl_lines(fields), max_size=10))
    body = draw(st.sampled_from([b"\n", b"\r\n"])).join(lines) + draw(st.sampled_from([b"\n", b""]))
    return (BOM if draw(st.booleans()) else b"") + body


@st.composite
def csv_file(draw) -> bytes:
    header = draw(st.sampled_from([list(c.EVENT_FIELDS), list(reversed(c.EVENT_FIELDS)), ["event_id", "ts"], None]))
    cells = st.one_of(st.text(max_size=10), st.sampled_from(["e1", "u1", "click", "2026-03-01T10:00:00Z", "1772359200000"]),
                      st.sampled_from(["x" * 400, 'a"b', "a,b", "a\nb"]))
    valid = VALID.map(lambda e: [e[f] for f in (header or c.EVENT_FIELDS)])
    records = draw(st.lists(st.one_of(valid, st.lists(cells, min_size=1, max_size=6)), max_size=8))
    text = io.StringIO()
    writer = csv.writer(text)
    for record in ([header] if header else []) + records:
        writer.writerow(record)
    data = text.getvalue().encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):  # raw damage: invalid UTF-8, a stray quote, a NUL
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff\xfe", b'"', b"\x00", b"\r"])) + data[at:]
    return (BOM if draw(st.booleans()) else b"") + data


def compress(draw, data: bytes) -> bytes:
    packed = gzip.compress(data)
    how = draw(st.sampled_from(["whole", "truncated", "corrupt"]))
    if how == "truncated":
        return packed[: draw(st.integers(0, len(packed) - 1))]
    if how == "corrupt":
        damaged = bytearray(packed)
        for i in range(10, min(18, len(damaged))):
            damaged[i] ^= 0xFF
        return bytes(damaged)
    return packed


@st.composite
def raw_folders(draw) -> dict[str, bytes]:
    files = {}
    for i in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["jsonl", "csv", "images"]))
        data = draw(csv_file()) if kind == "csv" else draw(jsonl_file(c.IMAGE_FIELDS if kind == "images" else c.EVENT_FIELDS))
        name = {"jsonl": f"log{i}.jsonl", "csv": f"log{i}.csv", "images": f"images{i}.jsonl"}[kind]
        if draw(st.booleans()):
            data, name = compress(draw, data), name + ".gz"
        files[name] = data
    return files


def rows_in(data: bytes) -> int:
    """Non-blank lines of an uncompressed JSONL file: each is a row ingest must count."""
    body = data[len(BOM):] if data.startswith(BOM) else data
    lines = body.split(b"\n")
    if body.endswith(b"\n"):
        lines.pop()
    return sum(line not in (b"", b"\r") for line in lines)


def valid_id(line: bytes) -> str | None:
    """The event id of a line VALID wrote, else None."""
    for n in range(5):
        for actor in ("u1", "u2"):
            if line.rstrip(b"\r") == json.dumps(valid_event(n, actor)).encode():
                return f"{VALID_PREFIX}{n}"
    return None


def table(path: Path) -> pl.DataFrame:
    """A table ingest wrote, or an empty one where it wrote none (no row of that kind was kept)."""
    if path.exists():
        return pl.read_parquet(path)
    return pl.DataFrame(schema={"source": pl.String, "reason": pl.String, "event_id": pl.String})


def check_counts(out: Path, counts: dict, files: dict[str, bytes]) -> None:
    total = counts["added"] + counts["duplicates"] + counts["forgotten"] + counts["quarantined"]
    assert counts["read"] == total and counts["conflicts"] <= counts["duplicates"]
    sources = pl.read_parquet(out / c.SOURCES_FILE)
    events, images, quarantine = (table(out / name) for name in (c.EVENTS_DIR, c.IMAGES_FILE, c.QUARANTINE_DIR))
    for f in sources.iter_rows(named=True):
        added = f["valid"] - f["duplicates"] - f["forgotten"]
        kept = (events if f["kind"] == "events" else images).filter(pl.col("source") == f["source"]).height
        assert (f["read"], kept) == (f["valid"] + f["quarantined"], added), f
        assert 0 <= f["conflicts"] <= f["duplicates"] and added >= 0, f
        assert quarantine.filter((pl.col("source") == f["source"]) & (pl.col("reason") != "unreadable_file")).height == f["quarantined"]
        if f["source"].endswith(".jsonl"):
            assert f["read"] == rows_in(files[f["source"]]), f
    assert set(counts["unreadable_files"]) == set(files) - set(sources["source"])
    unreadable = pl.col("source").is_in(counts["unreadable_files"])  # nothing half-read of them is kept
    assert events.filter(unreadable).height == images.filter(unreadable).height == 0
    assert set(quarantine.filter(unreadable)["reason"].to_list()) <= {"unreadable_file"}
    plain_valid = {line for name, data in files.items() if name.startswith("log") and name.endswith(".jsonl")
                   for line in map(valid_id, data.split(b"\n")) if line}
    assert plain_valid <= set(events["event_id"].to_list())  # nothing valid is lost


@PROFILE
@given(files=raw_folders(), chunk_bytes=st.sampled_from([1024, 2**16]), max_line=st.sampled_from([256, 2**16]))
def test_ingest_never_crashes_and_counts_every_row_once(files, chunk_bytes, max_line):
    cfg = IngestConfig(chunk_bytes=chunk_bytes, max_line_bytes=max_line, lock_timeout_s=0)
    with tempfile.TemporaryDirectory(prefix="prefgen-fuzz-") as work:
        raw, out = Path(work) / "raw", Path(work) / "out"
        raw.mkdir()
        for name, data in files.items():
            (raw / name).write_bytes(data)
        counts = run(cfg, raw, out, now=NOW)
        check_counts(out, counts, files)
        quarantined = table(out / c.QUARANTINE_DIR).height
        again = run(cfg, raw, out, now=NOW)  # unreadable files are retried, not recorded again
        assert again["read"] == 0 and again["unreadable_files"] == counts["unreadable_files"]
        assert again["tables"]["quarantine"] == quarantined == counts["tables"]["quarantine"]
