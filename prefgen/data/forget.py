"""Deletion requests: `prefgen forget ID` removes one individual from the tables.

What is removed: the individual's own events (every type whose actor is an
individual), follow/unfollow events that target them, hence their follows and
memberships, and quarantined lines that name them. What is kept: a row in
forgotten.parquet with the id's sha256, who asked, when and how many rows went,
so that ingest drops the individual's events from raw files read later, and an
audit can show the request was honoured without keeping the id itself.

Because the ingest stage's outputs change, `dvc status` reports the stage as
changed and the next retrain re-runs it and everything downstream of it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from prefgen.data import contract as c
from prefgen.data.tables import parts, read_table, rebuild_graph_tables, write_table_atomic


class ForgetError(RuntimeError):
    pass


def subject_hash(individual_id: str) -> str:
    return hashlib.sha256(individual_id.encode("utf-8")).hexdigest()


def forgotten_hashes(out_dir: Path) -> set[str]:
    return set(read_table(out_dir / c.FORGOTTEN_FILE, c.FORGOTTEN_SCHEMA)["subject_sha256"].to_list())


def _hashes_of(ids: pl.Series) -> pl.Series:
    unique = ids.unique().drop_nulls()
    mapping = {v: subject_hash(v) for v in unique.to_list()}
    return ids.replace_strict(mapping, default=None, return_dtype=pl.String)


def forgotten_mask(events: pl.DataFrame, hashes: set[str]) -> pl.Series:
    """True for events that belong to a forgotten individual."""
    actor = _hashes_of(events["actor_id"]).is_in(list(hashes)) & events["type"].is_in(c.INDIVIDUAL_ACTOR_TYPES)
    target = _hashes_of(events["target_id"]).is_in(list(hashes)) & events["type"].is_in(c.FOLLOW_TYPES)
    return (actor | target).fill_null(False)


def _subject_expr(individual_id: str) -> pl.Expr:
    actor = (pl.col("actor_id") == individual_id) & pl.col("type").is_in(c.INDIVIDUAL_ACTOR_TYPES)
    target = (pl.col("target_id") == individual_id) & pl.col("type").is_in(c.FOLLOW_TYPES)
    return actor | target


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


def forget(out_dir: Path, individual_id: str, requested_by: str, now: datetime | None = None) -> dict[str, int | str]:
    """Remove one individual from the ingest tables under out_dir and record the request."""
    if not individual_id.strip():
        raise ForgetError("the individual id to forget is empty")
    if not (out_dir / c.SOURCES_FILE).is_file():
        raise ForgetError(f"{out_dir} holds no ingested tables (no {c.SOURCES_FILE})")
    before = {name: read_table(out_dir / f, s).height for name, f, s in
              (("follows", c.FOLLOWS_FILE, c.FOLLOWS_SCHEMA), ("memberships", c.MEMBERSHIPS_FILE, c.MEMBERSHIPS_SCHEMA))}
    events = _rewrite_parts(out_dir / c.EVENTS_DIR, ~_subject_expr(individual_id), c.EVENTS_SCHEMA)
    # A quarantined line names the subject if the id appears as a whole JSON or CSV token.
    token = rf'(^|[",\s{{}}\[\]:]){re.escape(individual_id)}($|[",\s{{}}\[\]:])'
    quarantine = _rewrite_parts(out_dir / c.QUARANTINE_DIR, ~pl.col("raw").str.contains(token), c.QUARANTINE_SCHEMA)
    after = rebuild_graph_tables(out_dir)
    record = {
        "subject_sha256": subject_hash(individual_id),
        "requested_by": requested_by,
        "requested_at": now or datetime.now(UTC),
        "events_removed": events,
        "follows_removed": before["follows"] - after["follows"],
        "memberships_removed": before["memberships"] - after["memberships"],
        "quarantine_removed": quarantine,
    }
    log = read_table(out_dir / c.FORGOTTEN_FILE, c.FORGOTTEN_SCHEMA)
    write_table_atomic(pl.concat([log, pl.DataFrame([record], schema=log.schema)]), out_dir / c.FORGOTTEN_FILE, c.FORGOTTEN_SCHEMA)
    return record | {"requested_at": record["requested_at"].isoformat()}
