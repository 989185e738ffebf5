"""The Parquet tables ingest writes: atomic writes, reading, and derived tables.

Every write goes to a temporary file in the same folder and is renamed into
place, so a reader (or a rerun after a kill) never sees half a table.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.atomic import atomic_path
from prefgen.data.contract import (
    EVENTS_DIR,
    EVENTS_SCHEMA,
    FOLLOW_TYPES,
    FOLLOWS_SCHEMA,
    MEMBERSHIP_TYPES,
    MEMBERSHIPS_SCHEMA,
)


def write_table_atomic(frame: pl.DataFrame, path: Path, schema: pa.Schema) -> None:
    """Write `frame` to `path` with the contract's schema, atomically."""
    table = frame.select(schema.names).to_arrow().cast(schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: Path, schema: pa.Schema) -> pl.DataFrame:
    """A single-file table, or an empty frame with the schema where it does not exist yet."""
    if path.is_file():
        return pl.read_parquet(path)
    return pl.from_arrow(schema.empty_table())  # type: ignore[return-value]


def parts(folder: Path) -> list[Path]:
    """The Parquet parts of a folder table, in name order (temporary files excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def scan_parts(folder: Path, schema: pa.Schema, exclude: Path | None = None) -> pl.LazyFrame:
    files = [p for p in parts(folder) if p != exclude]
    if not files:
        return pl.from_arrow(schema.empty_table()).lazy()  # type: ignore[union-attr]
    return pl.scan_parquet(files)


def latest_state(events: pl.LazyFrame, types: tuple[str, str], src: str, dst: str) -> pl.LazyFrame:
    """Pairs whose latest (add, remove) event is an add: the state as of the latest event.

    `since` is the time of that latest add. Ties in `ts` are broken by (source,
    line), so the result does not depend on the order parts are read in.
    """
    add, _remove = types
    return (
        events.filter(pl.col("type").is_in(types))
        .select("actor_id", "target_id", "type", "ts", "source", "line")
        .sort(["ts", "source", "line"])
        .unique(subset=["actor_id", "target_id"], keep="last")
        .filter(pl.col("type") == add)
        .select(pl.col("actor_id").alias(src), pl.col("target_id").alias(dst), pl.col("ts").alias("since"))
        .sort([src, dst])
    )


def rebuild_graph_tables(out_dir: Path) -> dict[str, int]:
    """Recompute follows and memberships from all events; returns their row counts."""
    events = scan_parts(out_dir / EVENTS_DIR, EVENTS_SCHEMA)
    follows = latest_state(events, FOLLOW_TYPES, "follower_id", "followee_id").collect()
    # A membership event's actor is the individual and its target the group.
    memberships = (
        latest_state(events, MEMBERSHIP_TYPES, "member_id", "group_id")
        .select("group_id", "member_id", "since")
        .sort(["group_id", "member_id"])
        .collect()
    )
    write_table_atomic(follows, out_dir / "follows.parquet", FOLLOWS_SCHEMA)
    write_table_atomic(memberships, out_dir / "memberships.parquet", MEMBERSHIPS_SCHEMA)
    return {"follows": follows.height, "memberships": memberships.height}
