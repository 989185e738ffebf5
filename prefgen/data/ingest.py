"""Stage `ingest`: raw social logs (JSONL / CSV, gzip allowed) -> Parquet tables.

    raw_dir/**/*.jsonl|*.csv[.gz]        events (docs/DATA.md)
    raw_dir/**/images*.jsonl[.gz]        image manifests
        |  read in chunks (readers.py), validate every row (validate.py),
        |  quarantine bad rows with file, line and reason, drop deletion-request
        |  subjects, deduplicate by event_id against everything already ingested
        v
    out_dir/events/part-<batch>.parquet  one part per batch of new files
    out_dir/quarantine/part-<batch>.parquet
    out_dir/follows.parquet, memberships.parquet   state as of the latest event
    out_dir/images.parquet, sources.parquet (files ingested: the rerun state)

A rerun reads only files whose (path, sha256) is not in sources.parquet, so the
state lives in the outputs and no side database is needed. The batch id is a
hash of the new files, so a rerun after a kill rewrites the same part names and
never duplicates rows; sources.parquet is written last and is the commit point.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from prefgen.config import IngestConfig
from prefgen.data import contract as c
from prefgen.data.forget import forgotten_hashes, forgotten_mask
from prefgen.data.readers import ParsedChunk, file_format, iter_file
from prefgen.data.tables import parts, read_table, rebuild_graph_tables, scan_parts, write_table_atomic
from prefgen.data.validate import classify_events, classify_images

_IMAGES_NAME = ("images",)
_ASSET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
_EVENT_INT_OK = ("event_id", "ts", "actor_id", "target_id")


class IngestError(RuntimeError):
    """The whole input is unusable; nothing was written."""


@dataclass
class RawFile:
    path: Path
    source: str  # path relative to raw_dir, POSIX separators: the lineage key
    kind: str  # events | images
    sha256: str
    nbytes: int


@dataclass
class FileCounts:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    forgotten: int = 0
    duplicates: int = 0
    by_reason: Counter = field(default_factory=Counter)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def discover(raw_dir: Path) -> tuple[list[RawFile], list[str]]:
    """Raw log files under raw_dir (sorted, hidden paths skipped) and the names ignored."""
    if not raw_dir.is_dir():
        raise IngestError(f"raw log folder not found: {raw_dir}")
    found, ignored = [], []
    for path in sorted(p for p in raw_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(raw_dir).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        fmt = file_format(path)
        if fmt is None:
            if path.suffix.lower() not in _ASSET_SUFFIXES:  # pixels beside a manifest are expected
                ignored.append(rel)
            continue
        kind = "images" if path.name.startswith(_IMAGES_NAME) and fmt == "jsonl" else "events"
        found.append(RawFile(path, rel, kind, sha256_file(path), path.stat().st_size))
    return found, ignored


def _quarantine_frame(rows: list[tuple[int, str, str, str]], source: str, batch: str) -> pl.DataFrame:
    schema = {"line": pl.Int64, "reason": pl.String, "detail": pl.String, "raw": pl.String}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.with_columns(source=pl.lit(source), batch=pl.lit(batch))


def _split_chunk(chunk: ParsedChunk, classified: pl.DataFrame, rf: RawFile, batch: str, counts: FileCounts):
    """Valid rows and quarantine rows (with raw text) of one classified chunk."""
    bad = classified.filter(pl.col("reason").is_not_null())
    rows = list(chunk.rejected)
    if bad.height:
        raws = chunk.raw_text(bad["_line"].to_list())
        rows += list(zip(bad["_line"].to_list(), bad["reason"].to_list(), bad["detail"].to_list(), raws))
    counts.read += chunk.lines_read
    counts.quarantined += len(rows)
    counts.by_reason.update(r[1] for r in rows)
    good = classified.filter(pl.col("reason").is_null()).with_columns(source=pl.lit(rf.source), line=pl.col("_line"))
    counts.valid += good.height
    return good, _quarantine_frame(rows, rf.source, batch)


class _Batch:
    """One ingest run over the new raw files: stages chunks on disk, then commits."""

    def __init__(self, cfg: IngestConfig, out_dir: Path, files: list[RawFile], now: datetime, progress: bool):
        self.cfg, self.out_dir, self.files, self.now = cfg, out_dir, files, now
        self.progress = progress  # bars on a terminal, one line per file in logs
        key = "\n".join(f"{f.source}\t{f.sha256}" for f in files)
        self.id = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.staging = out_dir / f".staging-{self.id}"
        self.forgotten = forgotten_hashes(out_dir)
        self.counts: dict[str, FileCounts] = {}
        self.images: list[pl.DataFrame] = []
        self.unreadable: list[str] = []
        self._seq = 0

    def _stage(self, frame: pl.DataFrame, prefix: str) -> None:
        if frame.height:
            frame.write_parquet(self.staging / f"{prefix}-{self._seq:08d}.parquet", compression="lz4")
            self._seq += 1

    def _events_chunk(self, chunk: ParsedChunk, rf: RawFile, counts: FileCounts) -> None:
        classified = classify_events(chunk.frame, self.cfg, self.now)
        good, bad = _split_chunk(chunk, classified, rf, self.id, counts)
        good = good.select(*c.EVENT_FIELDS[:1], pl.col("ts_parsed").alias("ts"), *c.EVENT_FIELDS[2:], "source", "line")
        if self.forgotten:
            drop = forgotten_mask(good, self.forgotten)
            counts.forgotten += int(drop.sum())
            good = good.filter(~drop)
        self._stage(good, "events")
        self._stage(bad, "quarantine")

    def _images_chunk(self, chunk: ParsedChunk, rf: RawFile, counts: FileCounts) -> None:
        classified = classify_images(chunk.frame, self.cfg)
        good, bad = _split_chunk(chunk, classified, rf, self.id, counts)
        self.images.append(good.with_columns(pl.col("path", "caption").fill_null("")).select(c.IMAGES_SCHEMA.names))
        self._stage(bad, "quarantine")

    def read_file(self, rf: RawFile, bar: tqdm) -> None:
        counts = FileCounts()
        fields, int_ok = (c.EVENT_FIELDS, _EVENT_INT_OK) if rf.kind == "events" else (c.IMAGE_FIELDS, ("image_id", "owner_id"))
        handle = self._events_chunk if rf.kind == "events" else self._images_chunk
        seq_before, images_before = self._seq, len(self.images)
        try:
            for chunk in iter_file(rf.path, fields, int_ok, self.cfg.chunk_bytes):
                handle(chunk, rf, counts)
                bar.update(chunk.lines_read)
        except (OSError, EOFError, UnicodeError) as err:  # corrupt gzip, unreadable file
            for stale in sorted(self.staging.glob("*.parquet"))[seq_before:]:
                stale.unlink()
            del self.images[images_before:]
            self.unreadable.append(rf.source)
            counts = FileCounts(quarantined=1, by_reason=Counter(unreadable_file=1))
            row = [(0, "unreadable_file", f"{type(err).__name__}: {err}"[:500], "")]
            self._stage(_quarantine_frame(row, rf.source, self.id), "quarantine")
        self.counts[rf.source] = counts

    def read_all(self) -> None:
        clear_leftovers(self.out_dir)
        self.staging.mkdir(parents=True)
        interactive = sys.stderr.isatty()
        for i, rf in enumerate(self.files, 1):
            started = time.perf_counter()
            with tqdm(desc=rf.source, unit=" rows", unit_scale=True, disable=not (self.progress and interactive)) as bar:
                self.read_file(rf, bar)
            if self.progress and not interactive:  # logs (DVC, Prefect, CI): one line per file
                n, seconds = self.counts[rf.source], time.perf_counter() - started
                print(f"ingest [{i}/{len(self.files)}] {rf.source}: {n.read:,} rows read, {n.quarantined:,} quarantined, "
                      f"{seconds:.1f}s ({n.read / max(seconds, 1e-9):,.0f} rows/s)", file=sys.stderr, flush=True)

    def commit(self) -> dict[str, int]:
        """Deduplicate and write every table; sources.parquet last. Returns table sizes."""
        added = self._commit_events()
        self._commit_quarantine()
        images = self._commit_images()
        graph = rebuild_graph_tables(self.out_dir)
        self._commit_sources()
        shutil.rmtree(self.staging, ignore_errors=True)
        return {"events_added": added, "images": images, **graph}

    def _commit_events(self) -> int:
        target = self.out_dir / c.EVENTS_DIR / f"part-{self.id}.parquet"
        staged = sorted(self.staging.glob("events-*.parquet"))
        if not staged:
            target.unlink(missing_ok=True)
            return 0
        known = scan_parts(self.out_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA, exclude=target).select("event_id")
        fresh = pl.scan_parquet(staged).unique(subset="event_id", keep="first", maintain_order=True)
        new = fresh.join(known, on="event_id", how="anti", maintain_order="left").with_columns(batch=pl.lit(self.id)).collect()
        per_source = dict(new.group_by("source").len().iter_rows())
        for f in self.files:
            if f.kind == "events":
                counts = self.counts[f.source]
                counts.duplicates = counts.valid - counts.forgotten - per_source.get(f.source, 0)
        if new.height:
            write_table_atomic(new, target, c.EVENTS_SCHEMA)
        return new.height

    def _commit_quarantine(self) -> None:
        target = self.out_dir / c.QUARANTINE_DIR / f"part-{self.id}.parquet"
        staged = sorted(self.staging.glob("quarantine-*.parquet"))
        if staged:
            write_table_atomic(pl.read_parquet(staged), target, c.QUARANTINE_SCHEMA)

    def _commit_images(self) -> int:
        path = self.out_dir / c.IMAGES_FILE
        existing = read_table(path, c.IMAGES_SCHEMA)
        if not self.images:
            return existing.height
        new = pl.concat(self.images).cast(existing.schema)
        flagged = pl.concat([existing.with_columns(_new=pl.lit(False)), new.with_columns(_new=pl.lit(True))])
        merged = flagged.unique(subset="image_id", keep="first", maintain_order=True)
        kept = dict(merged.filter("_new").group_by("source").len().iter_rows())
        for source, offered in new.group_by("source").len().iter_rows():
            self.counts[source].duplicates = offered - kept.get(source, 0)
        merged = merged.drop("_new")
        write_table_atomic(merged, path, c.IMAGES_SCHEMA)
        return merged.height

    def _commit_sources(self) -> None:
        path = self.out_dir / c.SOURCES_FILE
        rows = [
            {"source": f.source, "sha256": f.sha256, "bytes": f.nbytes, "kind": f.kind, "batch": self.id,
             "ingested_at": self.now, "read": n.read, "valid": n.valid, "duplicates": n.duplicates,
             "quarantined": n.quarantined, "forgotten": n.forgotten}
            for f in self.files if f.source not in self.unreadable for n in [self.counts[f.source]]
        ]
        existing = read_table(path, c.SOURCES_SCHEMA)
        new = pl.DataFrame(rows, schema=existing.schema) if rows else existing.clear()
        write_table_atomic(pl.concat([existing, new]), path, c.SOURCES_SCHEMA)


def clear_leftovers(out_dir: Path) -> None:
    """Remove staging folders and temporary files a killed run may have left."""
    for stale in out_dir.glob(".staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in [*out_dir.glob(".*.tmp"), *out_dir.glob("*/.*.tmp")]:
        stale.unlink(missing_ok=True)


def _totals(counts: list[FileCounts]) -> dict[str, Any]:
    by_reason: Counter = Counter()
    for n in counts:
        by_reason.update(n.by_reason)
    total = {k: sum(getattr(n, k) for n in counts) for k in ("read", "valid", "duplicates", "quarantined", "forgotten")}
    total["added"] = total["valid"] - total["duplicates"] - total["forgotten"]
    return total | {"quarantined_by_reason": dict(sorted(by_reason.items()))}


def _table_sizes(out_dir: Path) -> dict[str, int]:
    def rows(files: list[Path]) -> int:
        return int(pl.scan_parquet(files).select(pl.len()).collect().item()) if files else 0

    sizes = {"events": rows(parts(out_dir / c.EVENTS_DIR)), "quarantine": rows(parts(out_dir / c.QUARANTINE_DIR))}
    for name, file in (("follows", c.FOLLOWS_FILE), ("memberships", c.MEMBERSHIPS_FILE), ("images", c.IMAGES_FILE)):
        sizes[name] = rows([out_dir / file]) if (out_dir / file).is_file() else 0
    return sizes


def new_files(files: list[RawFile], out_dir: Path) -> list[RawFile]:
    """Files whose (path, content) is not yet in sources.parquet."""
    seen = read_table(out_dir / c.SOURCES_FILE, c.SOURCES_SCHEMA)
    done = set(zip(seen["source"].to_list(), seen["sha256"].to_list()))
    return [f for f in files if (f.source, f.sha256) not in done]


def run(cfg: IngestConfig, raw_dir: Path, out_dir: Path, now: datetime | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Ingest the raw files under raw_dir not yet in out_dir; return the run's counts."""
    now = now or datetime.now(UTC)
    files, ignored = discover(raw_dir)
    if not files and not (out_dir / c.SOURCES_FILE).is_file():
        raise IngestError(f"no raw log files under {raw_dir} (expected *.jsonl, *.ndjson or *.csv, optionally .gz)")
    todo = new_files(files, out_dir)
    batch = _Batch(cfg, out_dir, todo, now, progress)
    if todo:
        batch.read_all()
        batch.commit()
    elif not (out_dir / c.FOLLOWS_FILE).is_file():  # e.g. tables removed by hand: rebuild from events
        rebuild_graph_tables(out_dir)
    kind_of = {f.source: f.kind for f in todo}
    events = [n for s, n in batch.counts.items() if kind_of[s] == "events"]
    images = [n for s, n in batch.counts.items() if kind_of[s] == "images"]
    return _totals(list(batch.counts.values())) | {
        "batch": batch.id if todo else None,
        "files": {"read": len(todo) - len(batch.unreadable), "unchanged": len(files) - len(todo),
                  "unreadable": len(batch.unreadable), "ignored": len(ignored)},
        "ignored_files": ignored,
        "unreadable_files": batch.unreadable,
        "events": _totals(events),
        "images": _totals(images),
        "tables": _table_sizes(out_dir),
    }
