"""Deletion requests: `prefgen forget ID` removes one individual from the tables.

The promise: after a request (and a retrain) the tables, and everything built from
them, equal what the same raw logs give with the individual's lines removed:

- their own events (every type whose actor is an individual) and follow/unfollow
  events aimed at them, hence their follows and memberships;
- their images (rows of images.parquet whose `owner_id` is them), with
  `forget.images: drop` (the default), and every event on those images, whoever made
  it; with `keep` the images stay and only the owner link goes (`owner_id` null);
- quarantined lines that name them.

What is kept: a row in forgotten.parquet with the id's sha256, who asked, when, the
`forget.images` value and how many rows went, and the sha256 of each dropped image id
in forgotten_images.parquet. Later ingests apply the same rule to new raw files
(`Forgetting`) without the ids of the person or of their images being stored.

An id found nowhere in the tables is refused unless `force` (a typo must not look
like a deletion and retrain everything); a repeated request changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from prefgen.data import contract as c
from prefgen.data.config import IngestConfig
from prefgen.data.rawfiles import IngestError, output_lock
from prefgen.data.tables import parts, read_table, rebuild_graph_tables, scan_parts, write_table_atomic

POLICIES = ("drop", "keep")


class ForgetError(RuntimeError):
    pass


def subject_hash(individual_id: str) -> str:
    return hashlib.sha256(individual_id.encode("utf-8")).hexdigest()


def read_requests(out_dir: Path) -> pl.DataFrame:
    """forgotten.parquet; requests recorded before the `images` column existed kept their images."""
    log = read_table(out_dir / c.FORGOTTEN_FILE, c.FORGOTTEN_SCHEMA)
    missing = {"images": pl.lit("keep"), "images_removed": pl.lit(0, pl.Int64)}
    return log.with_columns(**{k: v for k, v in missing.items() if k not in log.columns})


def forgotten_hashes(out_dir: Path) -> set[str]:
    return set(read_requests(out_dir)["subject_sha256"].to_list())


def dropped_image_hashes(out_dir: Path) -> set[str]:
    return set(read_table(out_dir / c.FORGOTTEN_IMAGES_FILE, c.FORGOTTEN_IMAGES_SCHEMA)["image_sha256"].to_list())


def _add_dropped_images(out_dir: Path, hashes: Iterable[str]) -> None:
    known = dropped_image_hashes(out_dir)
    new = set(hashes) - known
    if new:
        table = pl.DataFrame({"image_sha256": sorted(known | new)})
        write_table_atomic(table, out_dir / c.FORGOTTEN_IMAGES_FILE, c.FORGOTTEN_IMAGES_SCHEMA)


def _hashes_of(ids: pl.Series) -> pl.Series:
    unique = ids.unique().drop_nulls()
    mapping = {v: subject_hash(v) for v in unique.to_list()}
    return ids.replace_strict(mapping, default=None, return_dtype=pl.String)


def forgotten_mask(events: pl.DataFrame, hashes: set[str], dropped_images: set[str] = frozenset()) -> pl.Series:
    """True for events that belong to a forgotten individual or target a dropped image."""
    actor = _hashes_of(events["actor_id"]).is_in(list(hashes)) & events["type"].is_in(c.INDIVIDUAL_ACTOR_TYPES)
    target_hash = _hashes_of(events["target_id"])
    target = target_hash.is_in(list(hashes)) & events["type"].is_in(c.FOLLOW_TYPES)
    on_image = target_hash.is_in(list(dropped_images)) & events["type"].is_in(c.IMAGE_TARGET_TYPES)
    return (actor | target | on_image).fill_null(False)


class Forgetting:
    """The requests recorded under an ingest folder, applied to one batch of new raw rows."""

    def __init__(self, out_dir: Path) -> None:
        log = read_requests(out_dir)
        self.subjects = set(log["subject_sha256"].to_list())
        self.dropping = set(log.filter(pl.col("images") == "drop")["subject_sha256"].to_list())
        self.dropped_images = dropped_image_hashes(out_dir)
        self.new_dropped: set[str] = set()  # images of forgotten owners first seen in this batch
        self._new_dropped_ids: set[str] = set()  # their ids, in memory only: to purge events committed before

    def events(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """(the rows to keep, how many went)."""
        if not self.subjects:
            return frame, 0
        drop = forgotten_mask(frame, self.subjects, self.dropped_images)
        return frame.filter(~drop), int(drop.sum())

    def images(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Manifest rows: those of `drop` owners go (remembered by hash), `keep` owners lose the link."""
        if not self.subjects or not frame.height:
            return frame, 0
        owner = _hashes_of(frame["owner_id"])
        drop = owner.is_in(list(self.dropping)).fill_null(False)
        dropped = frame.filter(drop)["image_id"]
        self.new_dropped |= set(_hashes_of(dropped).to_list()) - self.dropped_images
        self._new_dropped_ids |= set(dropped.to_list())
        unlink = owner.is_in(list(self.subjects - self.dropping)).fill_null(False)
        kept = frame.with_columns(owner_id=pl.when(unlink).then(None).otherwise(pl.col("owner_id")))
        return kept.filter(~drop), int(drop.sum())

    def checkpoint(self) -> tuple[frozenset[str], frozenset[str]]:
        """The images dropped so far in this batch, to restore if the file being read fails."""
        return frozenset(self.new_dropped), frozenset(self._new_dropped_ids)

    def restore(self, checkpoint: tuple[frozenset[str], frozenset[str]]) -> None:
        """Undo what a file that failed dropped: its rows are discarded, and it is read again next run."""
        self.new_dropped, self._new_dropped_ids = set(checkpoint[0]), set(checkpoint[1])

    def purge_staged(self, staged: list[Path], counts: dict[str, Any]) -> None:
        """Drop from staged event files the events on images dropped in this batch (a manifest may come
        after the events file that clicks on it), adding them to each source's `counts[source].forgotten`."""
        if not self.new_dropped:
            return
        for path in staged:
            frame = pl.read_parquet(path)
            on_image = forgotten_mask(frame, set(), self.new_dropped)
            if on_image.any():
                for source, n in frame.filter(on_image).group_by("source").len().iter_rows():
                    counts[source].forgotten += n
                frame.filter(~on_image).write_parquet(path, compression="lz4")

    def save(self, out_dir: Path) -> int:
        """Record this batch's dropped images and remove the events earlier batches committed on them (a manifest
        may come runs after the events, e.g. one retried after it failed); returns how many events went."""
        on_image = pl.col("target_id").is_in(list(self._new_dropped_ids)) & pl.col("type").is_in(c.IMAGE_TARGET_TYPES)
        removed = _rewrite_parts(out_dir / c.EVENTS_DIR, ~on_image, c.EVENTS_SCHEMA) if self._new_dropped_ids else 0
        _add_dropped_images(out_dir, self.new_dropped)
        return removed


def _rewrite_parts(folder: Path, keep: pl.Expr, schema) -> int:
    """Rewrite every part that loses rows; returns the number of rows removed."""
    removed = 0
    for part in parts(folder):
        frame = pl.read_parquet(part)
        kept = frame.filter(keep)
        if kept.height < frame.height:
            removed += frame.height - kept.height
            if kept.height:
                write_table_atomic(kept, part, schema)
            else:
                part.unlink()
    return removed


def _events_expr(individual_id: str, dropped_images: list[str]) -> pl.Expr:
    """The events a request removes: the individual's own, follows aimed at them, and those on dropped images."""
    actor = (pl.col("actor_id") == individual_id) & pl.col("type").is_in(c.INDIVIDUAL_ACTOR_TYPES)
    target = (pl.col("target_id") == individual_id) & pl.col("type").is_in(c.FOLLOW_TYPES)
    on_image = pl.col("target_id").is_in(dropped_images) & pl.col("type").is_in(c.IMAGE_TARGET_TYPES)
    return actor | target | on_image


def _quarantine_expr(individual_id: str) -> pl.Expr:
    """A quarantined line names the subject if the id appears as a whole JSON or CSV token."""
    token = rf'(^|[",\s{{}}\[\]:]){re.escape(individual_id)}($|[",\s{{}}\[\]:])'
    return pl.col("raw").str.contains(token)


def mentions(out_dir: Path, individual_id: str) -> dict[str, int]:
    """Rows of each table that name the individual (what a request would remove or unlink)."""
    events = scan_parts(out_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA).filter(_events_expr(individual_id, []))
    quarantine = scan_parts(out_dir / c.QUARANTINE_DIR, c.QUARANTINE_SCHEMA).filter(_quarantine_expr(individual_id))
    images = read_table(out_dir / c.IMAGES_FILE, c.IMAGES_SCHEMA).filter(pl.col("owner_id") == individual_id)
    return {"events": _rows(events), "images": images.height, "quarantine": _rows(quarantine)}


def _rows(frame: pl.LazyFrame) -> int:
    return int(frame.select(pl.len()).collect().item())


def _apply(out_dir: Path, individual_id: str, images: str) -> dict[str, int]:
    """Remove (or unlink) every row naming the individual; returns how many rows went from each table."""
    table = read_table(out_dir / c.IMAGES_FILE, c.IMAGES_SCHEMA)
    owned = pl.col("owner_id") == individual_id
    dropped = table.filter(owned)["image_id"].to_list() if images == "drop" else []
    if images == "drop":
        new_images = table.filter(~owned.fill_null(False))
    else:
        new_images = table.with_columns(owner_id=pl.when(owned).then(None).otherwise(pl.col("owner_id")))
    before = {name: read_table(out_dir / f, s).height for name, f, s in
              (("follows", c.FOLLOWS_FILE, c.FOLLOWS_SCHEMA), ("memberships", c.MEMBERSHIPS_FILE, c.MEMBERSHIPS_SCHEMA))}
    events = _rewrite_parts(out_dir / c.EVENTS_DIR, ~_events_expr(individual_id, dropped), c.EVENTS_SCHEMA)
    quarantine = _rewrite_parts(out_dir / c.QUARANTINE_DIR, ~_quarantine_expr(individual_id), c.QUARANTINE_SCHEMA)
    if (out_dir / c.IMAGES_FILE).is_file():
        write_table_atomic(new_images, out_dir / c.IMAGES_FILE, c.IMAGES_SCHEMA)
    _add_dropped_images(out_dir, (subject_hash(i) for i in dropped))
    after = rebuild_graph_tables(out_dir)
    return {"events_removed": events, "follows_removed": before["follows"] - after["follows"],
            "memberships_removed": before["memberships"] - after["memberships"], "quarantine_removed": quarantine,
            "images_removed": len(dropped) if images == "drop" else table.filter(owned).height}


def forget(out_dir: Path, individual_id: str, requested_by: str, now: datetime | None = None,
           images: str = "drop", force: bool = False) -> dict[str, Any]:
    """Remove one individual from the ingest tables under out_dir and record the request.

    Returns the request record, or {"already_forgotten": True, ...} (nothing written) for a repeat."""
    if not individual_id.strip():
        raise ForgetError("the individual id to forget is empty")
    if images not in POLICIES:
        raise ForgetError(f"forget.images: {images!r}; use drop or keep")
    if not (out_dir / c.SOURCES_FILE).is_file():
        raise ForgetError(f"{out_dir} holds no ingested tables (no {c.SOURCES_FILE})")
    try:
        with output_lock(out_dir, IngestConfig().lock_timeout_s):  # an ingest would rewrite what we rewrite
            return _forget_locked(out_dir, individual_id, requested_by, now, images, force)
    except IngestError as err:
        raise ForgetError(str(err)) from None


def _forget_locked(out_dir: Path, individual_id: str, requested_by: str, now: datetime | None, images: str,
                   force: bool) -> dict[str, Any]:
    subject, log = subject_hash(individual_id), read_requests(out_dir)
    earlier = log.filter(pl.col("subject_sha256") == subject)
    if earlier.height:
        return {"already_forgotten": True, "subject_sha256": subject,
                "requested_at": earlier["requested_at"][0].isoformat()}
    if not force and not any(mentions(out_dir, individual_id).values()):
        raise ForgetError(f"no individual with that id in {out_dir} (sha256 {subject[:12]}): check the id, or pass "
                          "--force to record the request anyway so that later ingests keep them out")
    removed = _apply(out_dir, individual_id, images)
    record = {"subject_sha256": subject, "requested_by": requested_by, "requested_at": now or datetime.now(UTC),
              "images": images} | removed
    new_log = pl.concat([log.select(c.FORGOTTEN_SCHEMA.names), pl.DataFrame([record]).select(c.FORGOTTEN_SCHEMA.names)],
                        how="vertical_relaxed")
    write_table_atomic(new_log, out_dir / c.FORGOTTEN_FILE, c.FORGOTTEN_SCHEMA)  # last: the commit point
    return record | {"requested_at": record["requested_at"].isoformat()}
