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

No file can stop the run: a row that fails to parse is quarantined, a file that
fails to open or decompress is recorded once as `unreadable_file` and retried next
run (rawfiles.py skips FIFOs and links leaving raw_dir). One run at a time writes
to out_dir: it holds the folder's lock (rawfiles.output_lock) throughout.

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

from prefgen.data import contract as c
from prefgen.data.config import IngestConfig
from prefgen.data.forget import Forgetting
from prefgen.data.rawfiles import IngestError, RawFile, discover, output_lock
from prefgen.data.readers import ParsedChunk, iter_file
from prefgen.data.tables import parts, read_table, rebuild_graph_tables, scan_parts, write_table_atomic
from prefgen.data.validate import classify_events, classify_images

_EVENT_INT_OK = ("event_id", "ts", "actor_id", "target_id")
_EVENT_CONTENT = ("ts", "actor_id", "type", "target_id")  # what a re-sent event_id must repeat to be a plain duplicate
_COUNTS = ("read", "valid", "duplicates", "conflicts", "quarantined", "forgotten")
__all__ = ["IngestError", "RawFile", "discover", "run"]


@dataclass
class FileCounts:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    forgotten: int = 0
    duplicates: int = 0
    conflicts: int = 0  # of the duplicates, those with other content than the row that won
    by_reason: Counter = field(default_factory=Counter)


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
        self.forgetting = Forgetting(out_dir)
        self.counts: dict[str, FileCounts] = {}
        self.images: list[pl.DataFrame] = []
        self.unreadable: list[str] = []
        self.recorded_unreadable = _recorded_unreadable(out_dir, exclude=out_dir / c.QUARANTINE_DIR / f"part-{self.id}.parquet")
        self._seq = 0

    def _stage(self, frame: pl.DataFrame, prefix: str) -> None:
        if frame.height:
            frame.write_parquet(self.staging / f"{prefix}-{self._seq:08d}.parquet", compression="lz4")
            self._seq += 1

    def _events_chunk(self, chunk: ParsedChunk, rf: RawFile, counts: FileCounts) -> None:
        classified = classify_events(chunk.frame, self.cfg, self.now)
        good, bad = _split_chunk(chunk, classified, rf, self.id, counts)
        good = good.select(*c.EVENT_FIELDS[:1], pl.col("ts_parsed").alias("ts"), *c.EVENT_FIELDS[2:], "source", "line")
        good, forgotten = self.forgetting.events(good)
        counts.forgotten += forgotten
        self._stage(good, "events")
        self._stage(bad, "quarantine")

    def _images_chunk(self, chunk: ParsedChunk, rf: RawFile, counts: FileCounts) -> None:
        classified = classify_images(chunk.frame, self.cfg)
        good, bad = _split_chunk(chunk, classified, rf, self.id, counts)
        good, forgotten = self.forgetting.images(good.with_columns(pl.col("path", "caption").fill_null("")))
        counts.forgotten += forgotten
        self.images.append(good.select(c.IMAGES_SCHEMA.names))
        self._stage(bad, "quarantine")

    def read_file(self, rf: RawFile, bar: tqdm) -> None:
        counts = FileCounts()
        fields, int_ok = (c.EVENT_FIELDS, _EVENT_INT_OK) if rf.kind == "events" else (c.IMAGE_FIELDS, ("image_id", "owner_id"))
        handle = self._events_chunk if rf.kind == "events" else self._images_chunk
        seq_before, images_before, dropped_before = self._seq, len(self.images), self.forgetting.checkpoint()
        try:
            if rf.error:
                raise OSError(rf.error)
            for chunk in iter_file(rf.path, fields, int_ok, self.cfg.chunk_bytes, self.cfg.max_line_bytes):
                handle(chunk, rf, counts)
                bar.update(chunk.lines_read)
        except Exception as err:  # opening or decompressing failed (rows' own errors are quarantined as rows)
            self._drop_staged_since(seq_before)
            del self.images[images_before:]
            self.forgetting.restore(dropped_before)
            self._record_unreadable(rf, f"{type(err).__name__}: {err}")
            counts = FileCounts()
        self.counts[rf.source] = counts

    def _drop_staged_since(self, seq: int) -> None:
        for stale in self.staging.glob("*.parquet"):
            if int(stale.stem.rsplit("-", 1)[1]) >= seq:
                stale.unlink()

    def _record_unreadable(self, rf: RawFile, detail: str) -> None:
        """Not marked ingested, so retried next run; quarantined once per (source, sha256)."""
        self.unreadable.append(rf.source)
        key = f"sha256:{rf.sha256}"
        if (rf.source, key) not in self.recorded_unreadable:
            self._stage(_quarantine_frame([(0, "unreadable_file", detail[:500], key)], rf.source, self.id), "quarantine")

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
        self.forgetting.purge_staged(sorted(self.staging.glob("events-*.parquet")), self.counts)
        added = self._commit_events()
        self._commit_quarantine()
        images = self._commit_images()
        graph = rebuild_graph_tables(self.out_dir)
        self.forgetting.save(self.out_dir)
        self._commit_sources()
        shutil.rmtree(self.staging, ignore_errors=True)
        return {"events_added": added, "images": images, **graph}

    def _commit_events(self) -> int:
        target = self.out_dir / c.EVENTS_DIR / f"part-{self.id}.parquet"
        staged = sorted(self.staging.glob("events-*.parquet"))
        if not staged:
            target.unlink(missing_ok=True)
            return 0
        known = scan_parts(self.out_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA, exclude=target)
        fresh = pl.scan_parquet(staged).unique(subset="event_id", keep="first", maintain_order=True)
        new = fresh.join(known.select("event_id"), on="event_id", how="anti", maintain_order="left").with_columns(batch=pl.lit(self.id)).collect()
        per_source = dict(new.group_by("source").len().iter_rows())
        events = [self.counts[f.source] for f in self.files if f.kind == "events"]
        for f in self.files:
            if f.kind == "events":
                counts = self.counts[f.source]
                counts.duplicates = counts.valid - counts.forgotten - per_source.get(f.source, 0)
        conflicts = _conflicts(staged, known) if any(n.duplicates for n in events) else {}
        for f in self.files:
            if f.kind == "events":
                self.counts[f.source].conflicts = conflicts.get(f.source, 0)
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
             "quarantined": n.quarantined, "forgotten": n.forgotten, "conflicts": n.conflicts}
            for f in self.files if f.source not in self.unreadable for n in [self.counts[f.source]]
        ]
        existing = read_table(path, c.SOURCES_SCHEMA)
        if "conflicts" not in existing.columns:  # written before conflicts were counted apart
            existing = existing.with_columns(conflicts=pl.lit(0, dtype=pl.Int64))
        new = pl.DataFrame(rows, schema=existing.schema) if rows else existing.clear()
        write_table_atomic(pl.concat([existing, new]), path, c.SOURCES_SCHEMA)


def _conflicts(staged: list[Path], known: pl.LazyFrame) -> dict[str, int]:
    """Per source, the duplicates whose content differs from the row kept for their event_id.

    The kept row is the first ingested: an earlier batch's, else the first in this
    batch's file and line order. Later rows never overwrite it. Only rows whose id
    repeats are loaded, and only when the batch has duplicates at all.
    """
    rows = (pl.scan_parquet(staged).select("event_id", *_EVENT_CONTENT, "source")
            .with_row_index("_order").with_columns(pl.col("_order").cast(pl.Int64)))
    earlier = known.select("event_id", *_EVENT_CONTENT).join(rows.select("event_id"), on="event_id", how="semi")
    repeated = pl.concat([earlier.select("event_id"), rows.filter(pl.col("event_id").is_duplicated()).select("event_id")])
    rows = rows.join(repeated.unique(), on="event_id", how="semi", maintain_order="left").collect()
    before = earlier.collect().with_columns(_order=pl.lit(-1, dtype=pl.Int64))
    firsts = rows.filter(pl.col("event_id").is_first_distinct()).drop("source")
    kept = pl.concat([before.select(firsts.columns), firsts]).unique(subset="event_id", keep="first", maintain_order=True)
    losers = rows.join(kept.select("event_id", "_order"), on=["event_id", "_order"], how="anti")
    differs = pl.any_horizontal(pl.col(f) != pl.col(f"{f}_kept") for f in _EVENT_CONTENT)
    clashing = losers.join(kept.drop("_order"), on="event_id", suffix="_kept").filter(differs)
    return dict(clashing.group_by("source").len().iter_rows())


def _recorded_unreadable(out_dir: Path, exclude: Path) -> set[tuple[str, str]]:
    """(source, "sha256:<hex>") of every unreadable file already in quarantine, outside this batch's own part."""
    recorded = (scan_parts(out_dir / c.QUARANTINE_DIR, c.QUARANTINE_SCHEMA, exclude=exclude)
                .filter(pl.col("reason") == "unreadable_file").select("source", "raw").collect())
    return set(recorded.iter_rows())


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
    total = {k: sum(getattr(n, k) for n in counts) for k in _COUNTS}
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


def _open_output(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise IngestError(f"cannot create output folder {out_dir}: {err.strerror or err}") from err


def run(cfg: IngestConfig, raw_dir: Path, out_dir: Path, now: datetime | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Ingest the raw files under raw_dir not yet in out_dir; return the run's counts."""
    now = now or datetime.now(UTC)
    files, ignored, skipped = discover(raw_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise IngestError(f"output folder {out_dir} is a file, not a folder")
    if not files and not (out_dir / c.SOURCES_FILE).is_file():
        raise IngestError(f"no raw log files under {raw_dir} (expected *.jsonl, *.ndjson or *.csv, optionally .gz)")
    _open_output(out_dir)
    with output_lock(out_dir, cfg.lock_timeout_s):
        todo = new_files(files, out_dir)
        batch = _Batch(cfg, out_dir, todo, now, progress)
        if todo:
            batch.read_all()
            batch.commit()
        elif not (out_dir / c.FOLLOWS_FILE).is_file():  # e.g. tables removed by hand: rebuild from events
            rebuild_graph_tables(out_dir)
        tables = _table_sizes(out_dir)
    kind_of = {f.source: f.kind for f in todo}
    events = [n for s, n in batch.counts.items() if kind_of[s] == "events"]
    images = [n for s, n in batch.counts.items() if kind_of[s] == "images"]
    return _totals(list(batch.counts.values())) | {
        "batch": batch.id if todo else None,
        "files": {"read": len(todo) - len(batch.unreadable), "unchanged": len(files) - len(todo),
                  "unreadable": len(batch.unreadable), "ignored": len(ignored), "skipped": len(skipped)},
        "ignored_files": ignored,
        "skipped_files": skipped,
        "unreadable_files": batch.unreadable,
        "events": _totals(events),
        "images": _totals(images),
        "tables": tables,
    }
