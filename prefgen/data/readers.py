"""Readers for raw log files: JSONL here and CSV (csvreader.py), plain or gzip, in bounded chunks.

Each reader yields `ParsedChunk`s (chunks.py): a polars frame with the contract's
fields as strings plus `_line` (1-based line number in the file) and `_wrong_type`
(the first field holding a JSON type the contract forbids, else null), and the rows
that could not be parsed at all (bad UTF-8, bad JSON, not an object, bad CSV).

JSONL takes a fast path: polars parses a whole chunk at once. Only when that
fails is the chunk bisected until the offending lines are isolated and checked
one by one, so one bad line costs a few re-parses, not a Python loop over the file.

No input may stop or hang a read: a line longer than `max_line_bytes` is
rejected (`line_too_long`) while being skipped in bounded memory, a UTF-8
byte-order mark is dropped, and any error parsing one line rejects that line.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl

from prefgen.data.chunks import BOM, RAW_TEXT_LIMIT, ParsedChunk, empty_frame, lossy, open_binary, too_long_row
from prefgen.data.csvreader import iter_csv

__all__ = ["ParsedChunk", "file_format", "iter_csv", "iter_file", "iter_jsonl", "open_binary"]

# Below this many lines a failing slice is checked line by line instead of halved again.
_BISECT_LEAF = 32
# Polars renders non-string JSON values as text; these renderings may hide a JSON
# container, boolean or float where a string or integer belongs, and are re-checked
# exactly on the raw line. Plain strings and integers (the valid case) never match.
_SUSPICIOUS = r"^(?:[\[{].*|true|false|-?\d+\.\d*(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+)$"
_SUSPICIOUS_OR_INT = r"^(?:[\[{].*|true|false|-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)$"  # fields where ints are wrong too
# Polars renders an integral JSON float as an integer (`2.0000000000000001` -> "2"), so
# lines holding a field value with a fraction or exponent are re-checked on their raw text.
_FLOAT_VALUE = re.compile(rb'"\s*:\s*-?\d+[.eE]')
_SCAN_BYTES = 1 << 22  # numpy scans a block in slices of this size to bound its temporary arrays


class _JsonNumber(str):
    """A JSON number kept as its exact source text."""


class _JsonInt(_JsonNumber):
    pass


def _loads_exact(raw: bytes) -> object:
    """JSON with numbers kept as their text: an id's digits are never rounded through a float."""
    return json.loads(raw.decode("utf-8"), parse_int=_JsonInt, parse_float=_JsonNumber, parse_constant=_JsonNumber)


def _json_type_error(obj: dict, fields: tuple[str, ...], int_ok: tuple[str, ...]) -> str | None:
    """The first field whose exact JSON type is not allowed, or None."""
    for name in fields:
        value = obj.get(name)
        if value is None or (isinstance(value, str) and not isinstance(value, _JsonNumber)):
            continue
        if isinstance(value, _JsonInt) and name in int_ok:
            continue
        return name
    return None


def _parse_line(raw: bytes) -> tuple[dict | None, tuple[str, str] | None]:
    """One JSONL line as an object of exact values, or (None, (reason, detail))."""
    try:
        obj = _loads_exact(raw)
    except UnicodeDecodeError as err:
        return None, ("invalid_utf8", f"byte {err.start}: {err.reason}")
    except RecursionError:
        return None, ("bad_json", "nested too deeply")
    except ValueError as err:
        return None, ("bad_json", str(err)[:200])
    if not isinstance(obj, dict):
        return None, ("not_object", f"a JSON {_json_kind(obj)}, not an object")
    return obj, None


def _json_kind(value: object) -> str:
    if isinstance(value, _JsonNumber):
        return "number"
    return {str: "string", list: "array", bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


class _JsonlBlock:
    """One newline-aligned block of a JSONL file, with its line offsets."""

    def __init__(self, buf: bytes, first_line: int, fields: tuple[str, ...], int_ok: tuple[str, ...], max_line: int):
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
        line_no = np.arange(len(starts), dtype=np.int64) + first_line
        too_long = ~blank & (lengths > max_line)
        self.too_long = [too_long_row(int(n), buf[s : s + RAW_TEXT_LIMIT], int(k))
                         for n, s, k in zip(line_no[too_long], starts[too_long], lengths[too_long])]
        keep = ~blank & ~too_long
        self.starts, self.ends = starts[keep], ends[keep]
        self.line_no = line_no[keep]
        self.rows = len(self.line_no) + len(self.too_long)
        self.schema = {f: pl.String for f in fields}
        self.full_schema = self.schema | {"_line": pl.Int64, "_wrong_type": pl.String}
        self.checked: set[int] = set()  # lines already parsed exactly, on the slow path

    def raw(self, i: int) -> bytes:
        return self.buf[self.starts[i] : self.ends[i]]

    def index_of(self, lines: list[int]) -> list[int]:
        """Positions of the given line numbers (line_no is sorted)."""
        return np.searchsorted(self.line_no, np.asarray(lines, dtype=np.int64)).tolist()

    def raw_text(self, lines: list[int]) -> list[str]:
        return [lossy(self.raw(i)) for i in self.index_of(lines)]

    def _polars(self, lo: int, hi: int) -> pl.DataFrame | None:
        """Parse lines lo..hi-1 with polars; None if any of them trips it."""
        try:
            frame = pl.read_ndjson(io.BytesIO(self.buf[self.starts[lo] : self.ends[hi - 1]]), schema=self.schema)
        except Exception:  # polars raises several kinds for malformed input
            return None
        if frame.height != hi - lo:  # e.g. whitespace-only lines: let the slow path decide
            return None
        return frame.with_columns(pl.Series("_line", self.line_no[lo:hi]), pl.lit(None, dtype=pl.String).alias("_wrong_type"))

    def _exact(self, i: int) -> tuple[dict | None, tuple[str, str] | None]:
        """Line i parsed by Python, numbers kept as their text, or (None, (reason, detail))."""
        try:
            obj, problem = _parse_line(self.raw(i))
            if obj is not None and not all(_encodable(obj[f]) for f in self.fields if isinstance(obj.get(f), str)):
                return None, ("invalid_utf8", "a string holds a lone surrogate escape")
            return obj, problem
        except Exception as err:  # any surprise in one line rejects that line only
            return None, ("bad_json", f"{type(err).__name__}: {err}"[:200])

    def _line_by_line(self, lo: int, hi: int, rejected: list) -> list[pl.DataFrame]:
        """Lines polars cannot parse, one by one in Python: a frame of the good ones, the rest rejected."""
        rows = []
        for i in range(lo, hi):
            obj, problem = self._exact(i)
            if obj is None:
                rejected.append((int(self.line_no[i]), *problem, lossy(self.raw(i))))
                continue
            row = {f: obj[f] if isinstance(obj.get(f), str) else None if obj.get(f) is None else "" for f in self.fields}
            rows.append(row | {"_line": int(self.line_no[i]), "_wrong_type": _json_type_error(obj, self.fields, self.int_ok)})
        self.checked.update(row["_line"] for row in rows)
        return [pl.DataFrame(rows, schema=self.full_schema, orient="row")] if rows else []

    def parse(self, lo: int, hi: int, rejected: list) -> list[pl.DataFrame]:
        """Frames of lines lo..hi-1 in line order; lines that parse nowhere go to `rejected`."""
        if lo >= hi:
            return []
        frame = self._polars(lo, hi)
        if frame is not None:
            return [frame]
        if hi - lo <= _BISECT_LEAF:
            return self._line_by_line(lo, hi, rejected)
        mid = (lo + hi) // 2
        return self.parse(lo, mid, rejected) + self.parse(mid, hi, rejected)

    def _float_lines(self) -> list[int]:
        """Line numbers where a value has a fraction or exponent (polars would show "2.0" as "2").

        A digit followed by '.', 'e' or 'E' is found with numpy (a regex over the
        whole block costs more than parsing it); only those lines are regex-checked.
        """
        arr, hits = np.frombuffer(self.buf, dtype=np.uint8), []
        for lo in range(0, max(len(arr) - 1, 0), _SCAN_BYTES):
            window = arr[lo : lo + _SCAN_BYTES + 1]
            after = window[1:]
            mark = ((after == 46) | (after == 101) | (after == 69)) & ((window[:-1] - 48) < 10)
            hits.append(np.flatnonzero(mark) + lo + 1)
        offsets = np.concatenate(hits) if hits else np.array([], dtype=np.int64)
        candidates = np.unique(np.searchsorted(self.starts, offsets, side="right") - 1)
        return [int(self.line_no[i]) for i in candidates if i >= 0 and _FLOAT_VALUE.search(self.raw(i))]

    def wrong_types(self, frame: pl.DataFrame, rejected: list) -> pl.DataFrame:
        """Fill `_wrong_type` exactly, re-reading only polars rows whose rendering is ambiguous."""
        suspicious = pl.any_horizontal(
            pl.col(f).str.contains(_SUSPICIOUS if f in self.int_ok else _SUSPICIOUS_OR_INT) for f in self.fields
        )
        maybe_float = pl.col("_line").is_in(self._float_lines())
        ambiguous = (suspicious.fill_null(False) | maybe_float) & ~pl.col("_line").is_in(list(self.checked))
        lines = frame.filter(ambiguous)["_line"].to_list()
        if not lines:
            return frame
        marks, dropped = [], []
        for line, i in zip(lines, self.index_of(lines)):
            obj, problem = self._exact(i)
            if obj is None:
                rejected.append((line, *problem, lossy(self.raw(i))))
                dropped.append(line)
            else:
                marks.append((line, _json_type_error(obj, self.fields, self.int_ok)))
        marked = pl.DataFrame(marks, schema={"_line": pl.Int64, "_wrong_type": pl.String}, orient="row")
        frame = frame.update(marked, on="_line")
        return frame.filter(~pl.col("_line").is_in(dropped)) if dropped else frame


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_jsonl(
    path: Path, fields: tuple[str, ...], int_ok: tuple[str, ...], chunk_bytes: int, max_line_bytes: int | None = None
) -> Iterator[ParsedChunk]:
    """Yield parsed chunks of a JSONL file; `int_ok` fields may be JSON integers.

    A line longer than `max_line_bytes` (at most `chunk_bytes`) is rejected and
    skipped to its newline in bounded memory: it is never held whole.
    """
    max_line = min(max_line_bytes or chunk_bytes, chunk_bytes)
    with open_binary(path) as handle:
        carry, first_line = _skip_bom(handle), 1
        while True:
            data = handle.read(chunk_bytes)
            buf = carry + data
            cut = len(buf) if not data else buf.rfind(b"\n") + 1
            if cut:
                yield _parse_jsonl_block(buf[:cut], first_line, fields, int_ok, max_line)
                first_line += buf.count(b"\n", 0, cut)
            carry = buf[cut:]
            if len(carry) > max_line:  # the start of a line too long to keep: skip to its end
                yield ParsedChunk(empty_frame(fields), [too_long_row(first_line, carry[:RAW_TEXT_LIMIT], None)], lines_read=1)
                carry, data = _skip_past_newline(handle, chunk_bytes)
                first_line += 1
            if not data:
                return


def _skip_bom(handle: BinaryIO) -> bytes:
    head = handle.read(len(BOM))
    return b"" if head == BOM else head


def _skip_past_newline(handle: BinaryIO, chunk_bytes: int) -> tuple[bytes, bytes]:
    """Read on to the next newline; return (the bytes after it, b"" at end of file else b"\n")."""
    while data := handle.read(chunk_bytes):
        newline = data.find(b"\n")
        if newline >= 0:
            return data[newline + 1 :], b"\n"
    return b"", b""


def _parse_jsonl_block(buf: bytes, first_line: int, fields: tuple[str, ...], int_ok: tuple[str, ...],
                       max_line: int) -> ParsedChunk:
    block = _JsonlBlock(buf, first_line, fields, int_ok, max_line)
    rejected: list[tuple[int, str, str, str]] = list(block.too_long)
    frames = block.parse(0, len(block.line_no), rejected)
    frame = pl.concat(frames) if frames else empty_frame(fields)
    del frames
    frame = block.wrong_types(frame, rejected)
    return ParsedChunk(frame, rejected, block.raw_text, lines_read=block.rows)


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
    path: Path, fields: tuple[str, ...], int_ok: tuple[str, ...], chunk_bytes: int, max_line_bytes: int | None = None
) -> Iterator[ParsedChunk]:
    max_line = min(max_line_bytes or chunk_bytes, chunk_bytes)
    if file_format(path) == "csv":
        return iter_csv(path, fields, max_line_bytes=max_line, chunk_bytes=chunk_bytes)
    return iter_jsonl(path, fields, int_ok, chunk_bytes, max_line)
