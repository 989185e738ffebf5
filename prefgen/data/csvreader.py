"""CSV raw logs: a header row naming the fields, then one event per record, in bounded lines."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import polars as pl

from prefgen.data.chunks import BOM, RAW_TEXT_LIMIT, ParsedChunk, lossy, open_binary, too_long_row


def _csv_record_valid_utf8(record: list[str]) -> bool:
    for value in record:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a surrogate escape: the byte was not UTF-8
                return False
    return True


class _BoundedLines:
    """A binary file's lines as text for csv.reader, none held longer than `max_line` bytes.

    A longer line reaches the reader as an empty line (so its line numbers stay
    right) and is recorded in `too_long`; a leading byte-order mark is dropped.
    """

    def __init__(self, handle: BinaryIO, max_line: int, chunk_bytes: int):
        self.handle, self.max_line, self.chunk_bytes = handle, max_line, chunk_bytes
        self.too_long: list[tuple[int, str, str, str]] = []
        self.line = 0

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        raw = self.handle.readline(self.max_line + 1)
        if not raw:
            raise StopIteration
        self.line += 1
        if self.line == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if len(raw) > self.max_line and not raw.endswith(b"\n"):
            self.too_long.append(too_long_row(self.line, raw[:RAW_TEXT_LIMIT], None))
            while (rest := self.handle.readline(self.chunk_bytes)) and not rest.endswith(b"\n"):
                pass
            return "\n"
        return raw.decode("utf-8", errors="surrogateescape")


def _csv_records(path: Path, max_line: int, chunk_bytes: int) -> Iterator[tuple[int, list[str] | None, tuple | None]]:
    """(line, record, None) per non-blank CSV record, or (line, None, (reason, detail, raw)) per unreadable one."""
    with open_binary(path) as handle:
        lines = _BoundedLines(handle, max_line, chunk_bytes)
        reader = csv.reader(lines)
        while True:
            try:
                record = next(reader, None)
            except csv.Error as err:  # e.g. a field over csv.field_size_limit: that record only
                record, error = [], ("bad_csv", str(err)[:200], "")
            else:
                error = None
            for line, reason, detail, raw in lines.too_long:
                yield line, None, (reason, detail, raw)
            lines.too_long.clear()
            if error:
                yield reader.line_num, None, error
            if record is None:
                return
            if record and record != [""]:
                yield reader.line_num, record, None


def iter_csv(path: Path, fields: tuple[str, ...], chunk_rows: int = 500_000, max_line_bytes: int = 2**20,
             chunk_bytes: int = 2**20) -> Iterator[ParsedChunk]:
    """Yield parsed chunks of a CSV file with a header row naming the fields.

    CSV has no types, so `_wrong_type` is always null; the raw text kept for a
    quarantined record is the record re-joined with commas. A first row naming
    none of the fields is no header: that file's every record is `missing_header`.
    """
    header: list[str] | None = None
    positions: dict[str, int] = {}
    columns: dict[str, list] = {f: [] for f in fields} | {"_line": []}
    rejected: list[tuple[int, str, str, str]] = []
    raw_of: dict[int, str] = {}
    read = 0
    for line, record, error in _csv_records(path, min(max_line_bytes, chunk_bytes), chunk_bytes):
        if record is not None and header is None:
            header = [h.strip() for h in record]
            positions = {f: header.index(f) for f in fields if f in header}
            if positions:
                continue
        read += 1
        if error:
            rejected.append((line, *error))
        else:
            _csv_row(line, record, header, fields, positions, columns, rejected, raw_of)
        if read >= chunk_rows:
            yield _csv_chunk(columns, rejected, raw_of, read, fields)
            columns = {f: [] for f in fields} | {"_line": []}
            rejected, raw_of, read = [], {}, 0
    if read:
        yield _csv_chunk(columns, rejected, raw_of, read, fields)


def _csv_row(line: int, record: list[str], header: list[str], fields: tuple[str, ...], positions: dict[str, int],
             columns: dict[str, list], rejected: list, raw_of: dict[int, str]) -> None:
    """Add one record to the chunk's columns, or its reason to `rejected`."""
    raw = ",".join(record)[:RAW_TEXT_LIMIT]
    if not _csv_record_valid_utf8(record):
        rejected.append((line, "invalid_utf8", "a field is not valid UTF-8", lossy(raw.encode("utf-8", "surrogateescape"))))
    elif not positions:
        rejected.append((line, "missing_header", f"the first row names none of {', '.join(fields)}: no header", raw))
    elif len(record) != len(header):
        rejected.append((line, "bad_csv", f"expected {len(header)} fields, got {len(record)}", raw))
    else:
        for f in fields:
            columns[f].append(record[positions[f]] if f in positions else None)
        columns["_line"].append(line)
        raw_of[line] = raw


def _csv_chunk(columns: dict, rejected: list, raw_of: dict[int, str], read: int, fields: tuple[str, ...]) -> ParsedChunk:
    schema = {f: pl.String for f in fields} | {"_line": pl.Int64}
    frame = pl.DataFrame(columns, schema=schema).with_columns(pl.lit(None, dtype=pl.String).alias("_wrong_type"))
    return ParsedChunk(frame, rejected, lambda lines: [raw_of.get(int(n), "") for n in lines], lines_read=read)
