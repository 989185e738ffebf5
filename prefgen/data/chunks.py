"""What every raw-log reader yields, and the helpers they share (readers.py, csvreader.py)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import polars as pl

RAW_TEXT_LIMIT = 2000  # characters of a rejected line kept in quarantine's `raw`
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, dropped at the start of a file


@dataclass
class ParsedChunk:
    frame: pl.DataFrame  # fields as pl.String, `_line`, `_wrong_type`
    rejected: list[tuple[int, str, str, str]] = field(default_factory=list)  # line, reason, detail, raw
    raw_text: Callable[[list[int]], list[str]] = lambda lines: [""] * len(lines)
    lines_read: int = 0  # non-blank lines (rows) seen in this chunk


def open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def lossy(raw: bytes) -> str:
    return raw[:RAW_TEXT_LIMIT].decode("utf-8", errors="replace")


def empty_frame(fields: tuple[str, ...]) -> pl.DataFrame:
    schema = {f: pl.String for f in fields} | {"_line": pl.Int64, "_wrong_type": pl.String}
    return pl.DataFrame(schema=schema)


def too_long_row(line: int, head: bytes, length: int | None) -> tuple[int, str, str, str]:
    size = f"{length:,} bytes" if length is not None else "longer than a chunk"
    return (line, "line_too_long", f"line of {size} (max ingest.max_line_bytes)", lossy(head))
