"""Readers for raw log files: JSONL and CSV, plain or gzip, in bounded chunks.

Each reader yields `ParsedChunk`s: a polars frame with the contract's fields as
strings plus `_line` (1-based line number in the file) and `_wrong_type` (the
first field holding a JSON type the contract forbids, else null), and the rows
that could not be parsed at all (bad UTF-8, bad JSON, not an object, bad CSV).

JSONL takes a fast path: polars parses a whole chunk at once. Only when that
fails is the chunk bisected until the offending lines are isolated and checked
one by one, so one bad line costs a few re-parses, not a Python loop over the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl

RAW_TEXT_LIMIT = 2000
# Below this many lines a failing slice is checked line by line instead of halved again.
_BISECT_LEAF = 32
# Polars renders non-string JSON values as text; these renderings may hide a JSON
# container, boolean or float where a string or integer belongs, and are re-checked
# exactly on the raw line. Plain strings and integers (the valid case) never match.
_SUSPICIOUS = r"^(?:[\[{].*|true|false|-?\d+\.\d*(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+)$"
_SUSPICIOUS_OR_INT = r"^(?:[\[{].*|true|false|-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)$"  # fields where ints are wrong too


@dataclass
class ParsedChunk:
    frame: pl.DataFrame  # fields as pl.String, `_line`, `_wrong_type`
    rejected: list[tuple[int, str, str, str]] = field(default_factory=list)  # line, reason, detail, raw
    raw_text: Callable[[list[int]], list[str]] = lambda lines: [""] * len(lines)
    lines_read: int = 0  # non-blank lines (rows) seen in this chunk


def open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def _lossy(raw: bytes) -> str:
    return raw[:RAW_TEXT_LIMIT].decode("utf-8", errors="replace")


def _empty_frame(fields: tuple[str, ...]) -> pl.DataFrame:
    schema = {f: pl.String for f in fields} | {"_line": pl.Int64, "_wrong_type": pl.String}
    return pl.DataFrame(schema=schema)


def _json_type_error(obj: dict, fields: tuple[str, ...], int_ok: tuple[str, ...]) -> str | None:
    """The first field whose exact JSON type is not allowed, or None."""
    for name in fields:
        value = obj.get(name)
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and name in int_ok:
            continue
        return name
    return None


class _JsonlBlock:
    """One newline-aligned block of a JSONL file, with its line offsets."""

    def __init__(self, buf: bytes, first_line: int, fields: tuple[str, ...], int_ok: tuple[str, ...]):
        self.buf, self.fields, self.int_ok = buf, fields, int_ok
        arr = np.frombuffer(buf, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)
        if len(buf) and buf[-1:] != b"\n":
            ends = np.append(ends, len(buf))
        starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        lengths = ends - starts
        # Blank lines (possibly "\r") carry no row; polars skips them too.
        first = arr[np.minimum(starts, max(len(buf) - 1, 0))] if len(buf) else np.array([])
        blank = (lengths == 0) | ((lengths == 1) & (first == 13))
        keep = ~blank
        self.starts, self.ends = starts[keep], ends[keep]
        self.line_no = (np.arange(len(starts), dtype=np.int64) + first_line)[keep]
        self.schema = {f: pl.String for f in fields}

    def raw(self, i: int) -> bytes:
        return self.buf[self.starts[i] : self.ends[i]]

    def index_of(self, lines: list[int]) -> list[int]:
        """Positions of the given line numbers (line_no is sorted)."""
        return np.searchsorted(self.line_no, np.asarray(lines, dtype=np.int64)).tolist()

    def raw_text(self, lines: list[int]) -> list[str]:
        return [_lossy(self.raw(i)) for i in self.index_of(lines)]

    def _polars(self, lo: int, hi: int) -> pl.DataFrame | None:
        """Parse lines lo..hi-1 with polars; None if any of them trips it."""
        try:
            frame = pl.read_ndjson(io.BytesIO(self.buf[self.starts[lo] : self.ends[hi - 1]]), schema=self.schema)
        except Exception:  # polars raises several kinds for malformed input
            return None
        if frame.height != hi - lo:  # e.g. whitespace-only lines: let the slow path decide
            return None
        return frame.with_columns(pl.Series("_line", self.line_no[lo:hi]))

    def _line_by_line(self, lo: int, hi: int, rejected: list) -> list[pl.DataFrame]:
        frames = []
        for i in range(lo, hi):
            raw, line = self.raw(i), int(self.line_no[i])
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                rejected.append((line, "invalid_utf8", f"byte {err.start}: {err.reason}", _lossy(raw)))
                continue
            except ValueError as err:
                rejected.append((line, "bad_json", str(err)[:200], _lossy(raw)))
                continue
            if not isinstance(obj, dict):
                rejected.append((line, "not_object", f"a JSON {type(obj).__name__}, not an object", _lossy(raw)))
                continue
            frame = self._polars(i, i + 1)
            if frame is None:  # valid JSON that polars cannot represent, e.g. a 100-digit number
                rejected.append((line, "bad_json", "value out of the supported range", _lossy(raw)))
                continue
            frames.append(frame)
        return frames

    def parse(self, lo: int, hi: int, rejected: list) -> list[pl.DataFrame]:
        if lo >= hi:
            return []
        frame = self._polars(lo, hi)
        if frame is not None:
            return [frame]
        if hi - lo <= _BISECT_LEAF:
            return self._line_by_line(lo, hi, rejected)
        mid = (lo + hi) // 2
        return self.parse(lo, mid, rejected) + self.parse(mid, hi, rejected)

    def wrong_types(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Fill `_wrong_type` exactly, re-reading only rows whose rendering is ambiguous."""
        suspicious = pl.any_horizontal(
            pl.col(f).str.contains(_SUSPICIOUS if f in self.int_ok else _SUSPICIOUS_OR_INT) for f in self.fields
        )
        lines = frame.filter(suspicious.fill_null(False))["_line"].to_list()
        if not lines:
            return frame.with_columns(pl.lit(None, dtype=pl.String).alias("_wrong_type"))
        errors = [_json_type_error(json.loads(self.raw(i)), self.fields, self.int_ok) for i in self.index_of(lines)]
        marks = pl.DataFrame({"_line": lines, "_wrong_type": errors}, schema={"_line": pl.Int64, "_wrong_type": pl.String})
        return frame.join(marks, on="_line", how="left", maintain_order="left")


def iter_jsonl(
    path: Path, fields: tuple[str, ...], int_ok: tuple[str, ...], chunk_bytes: int
) -> Iterator[ParsedChunk]:
    """Yield parsed chunks of a JSONL file; `int_ok` fields may be JSON integers."""
    with open_binary(path) as handle:
        carry, first_line = b"", 1
        while True:
            data = handle.read(chunk_bytes)
            buf = carry + data
            cut = len(buf) if not data else buf.rfind(b"\n") + 1
            if cut == 0 and data:  # one line longer than a chunk: keep reading
                carry = buf
                continue
            if cut:
                yield _parse_jsonl_block(buf[:cut], first_line, fields, int_ok)
                first_line += buf.count(b"\n", 0, cut)
            carry = buf[cut:]
            if not data:
                return


def _parse_jsonl_block(buf: bytes, first_line: int, fields: tuple[str, ...], int_ok: tuple[str, ...]) -> ParsedChunk:
    block = _JsonlBlock(buf, first_line, fields, int_ok)
    rejected: list[tuple[int, str, str, str]] = []
    frames = block.parse(0, len(block.line_no), rejected)
    frame = pl.concat(frames) if frames else _empty_frame(fields).drop("_wrong_type")
    frame = block.wrong_types(frame)
    return ParsedChunk(frame, rejected, block.raw_text, lines_read=len(block.line_no))


def _csv_record_valid_utf8(record: list[str]) -> bool:
    for value in record:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a surrogate escape: the byte was not UTF-8
                return False
    return True


def iter_csv(path: Path, fields: tuple[str, ...], chunk_rows: int = 500_000) -> Iterator[ParsedChunk]:
    """Yield parsed chunks of a CSV file with a header row naming the fields.

    CSV has no types, so `_wrong_type` is always null; the raw text kept for a
    quarantined record is the record re-joined with commas.
    """
    with open_binary(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        positions = {f: header.index(f) for f in fields if f in header}
        columns: dict[str, list] = {f: [] for f in fields} | {"_line": []}
        rejected: list[tuple[int, str, str, str]] = []
        raw_of: dict[int, str] = {}
        read = 0
        for record in reader:
            line = reader.line_num
            if not record or record == [""]:
                continue
            read += 1
            raw = ",".join(record)[:RAW_TEXT_LIMIT]
            if not _csv_record_valid_utf8(record):
                rejected.append((line, "invalid_utf8", "a field is not valid UTF-8", _lossy(raw.encode("utf-8", "surrogateescape"))))
            elif len(record) != len(header):
                rejected.append((line, "bad_csv", f"expected {len(header)} fields, got {len(record)}", raw))
            else:
                for f in fields:
                    columns[f].append(record[positions[f]] if f in positions else None)
                columns["_line"].append(line)
                raw_of[line] = raw
            if read >= chunk_rows:
                yield _csv_chunk(columns, rejected, raw_of, read, fields)
                columns = {f: [] for f in fields} | {"_line": []}
                rejected, raw_of, read = [], {}, 0
        if read:
            yield _csv_chunk(columns, rejected, raw_of, read, fields)


def _csv_chunk(columns: dict, rejected: list, raw_of: dict[int, str], read: int, fields: tuple[str, ...]) -> ParsedChunk:
    schema = {f: pl.String for f in fields} | {"_line": pl.Int64}
    frame = pl.DataFrame(columns, schema=schema).with_columns(pl.lit(None, dtype=pl.String).alias("_wrong_type"))
    return ParsedChunk(frame, rejected, lambda lines: [raw_of.get(int(n), "") for n in lines], lines_read=read)


_CSV_NAME = re.compile(r"\.csv(\.gz)?$")
_JSONL_NAME = re.compile(r"\.(jsonl|ndjson)(\.gz)?$")


def file_format(path: Path) -> str | None:
    """'jsonl', 'csv', or None for a file that is not a raw log."""
    if _JSONL_NAME.search(path.name):
        return "jsonl"
    if _CSV_NAME.search(path.name):
        return "csv"
    return None


def iter_file(
    path: Path, fields: tuple[str, ...], int_ok: tuple[str, ...], chunk_bytes: int
) -> Iterator[ParsedChunk]:
    if file_format(path) == "csv":
        return iter_csv(path, fields)
    return iter_jsonl(path, fields, int_ok, chunk_bytes)
