"""Row validation rules, vectorised with polars.

`classify_events` / `classify_images` add `reason` and `detail` columns: null for
a valid row, else the first rule the row breaks (rules are checked in the order
of `contract.REASONS`). Pure functions of the frame and the config, so each rule
has a test of its own in tests/data/test_validate.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from prefgen.data.config import IngestConfig
from prefgen.data.contract import EVENT_ID_FIELDS, EVENT_TYPES, FOLLOW_TYPES, IMAGE_REQUIRED

_CONTROL_CHARS = r"[\x00-\x1f\x7f]"
# Calendar check at ISO precision: chrono's "%+" accepts "T" or " ", fractional
# seconds, and "Z" or "+hh:mm"; it rejects a missing offset and impossible dates.
_ISO_FORMAT = "%+"
_RENDER_MIN, _RENDER_MAX = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)


def _first_failure(rules: list[tuple[pl.Expr, str, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    """Fold (condition, reason, detail) rules into the first one that fires."""
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    detail: pl.Expr = pl.lit(None, dtype=pl.String)
    for condition, code, text in reversed(rules):
        reason = pl.when(condition).then(pl.lit(code)).otherwise(reason)
        detail = pl.when(condition).then(text).otherwise(detail)
    return reason, detail


def _id_rules(fields: tuple[str, ...], max_len: int) -> list[tuple[pl.Expr, str, pl.Expr]]:
    rules = []
    for f in fields:
        rules.append((pl.col(f).str.strip_chars().str.len_chars() == 0, "empty_id", pl.lit(f"{f} is empty")))
    for f in fields:
        too_long = pl.col(f).str.len_chars() > max_len
        rules.append((too_long, "id_too_long", pl.format(f"{f} has {{}} characters (max {max_len})", pl.col(f).str.len_chars())))
    for f in fields:
        rules.append((pl.col(f).str.contains(_CONTROL_CHARS), "bad_id", pl.lit(f"{f} holds control characters")))
    return rules


def _common_rules(required: tuple[str, ...]) -> list[tuple[pl.Expr, str, pl.Expr]]:
    rules = [(pl.col("_wrong_type").is_not_null(), "wrong_type", pl.format("{} must be a string or integer", pl.col("_wrong_type")))]
    for f in required:
        rules.append((pl.col(f).is_null(), "missing_field", pl.lit(f"{f} is missing or null")))
    return rules


def parse_ts(ts: pl.Series) -> pl.Series:
    """ISO-8601 with an offset, or Unix epoch milliseconds -> Datetime(ms, UTC); null if neither.

    Logs use one format almost always, so the calendar parse runs only on the
    rows that are not plain integers.
    """
    epoch = ts.cast(pl.Int64, strict=False)
    parsed = epoch.cast(pl.Datetime("ms", "UTC"))
    todo = (epoch.is_null() & ts.is_not_null()).arg_true()
    if len(todo):
        iso = ts.gather(todo).str.to_datetime(_ISO_FORMAT, strict=False, time_unit="ms", time_zone="UTC")
        parsed = parsed.scatter(todo, iso)
    return parsed.alias("ts_parsed")


def _renderable(ts: pl.Expr) -> pl.Expr:
    """`ts` clipped to years 1-9999: polars holds epoch ms far past them but panics rendering one."""
    return ts.clip(_RENDER_MIN, _RENDER_MAX)


def classify_events(frame: pl.DataFrame, cfg: IngestConfig, now: datetime) -> pl.DataFrame:
    """Add `ts_parsed`, `reason` and `detail` to a frame of raw event fields."""
    ts_min = datetime.fromisoformat(cfg.ts_min.replace("Z", "+00:00"))
    ts_max = now + timedelta(seconds=cfg.max_future_s)
    ts = pl.col("ts_parsed")
    rules = _common_rules(("event_id", "ts", "actor_id", "type", "target_id"))
    rules.append((~pl.col("type").is_in(EVENT_TYPES), "unknown_type", pl.format("type '{}' is not one of " + "|".join(EVENT_TYPES), pl.col("type"))))
    rules += _id_rules(EVENT_ID_FIELDS, cfg.max_id_len)
    rules += [
        (ts.is_null(), "bad_timestamp", pl.format("ts '{}' is neither ISO-8601 with an offset nor epoch ms", pl.col("ts"))),
        ((ts < ts_min) | (ts > ts_max), "timestamp_out_of_range", pl.format(f"ts '{{}}' ({{}}) outside [{cfg.ts_min}, ingest time + {cfg.max_future_s}s]", pl.col("ts"), _renderable(ts))),
        (pl.col("type").is_in(FOLLOW_TYPES) & (pl.col("actor_id") == pl.col("target_id")), "self_follow", pl.format("{} of oneself", pl.col("type"))),
    ]
    reason, detail = _first_failure(rules)
    return frame.with_columns(parse_ts(frame["ts"])).with_columns(
        reason.alias("reason"), detail.alias("detail")
    )


def classify_images(frame: pl.DataFrame, cfg: IngestConfig) -> pl.DataFrame:
    """Add `reason` and `detail` to a frame of raw image-manifest fields."""
    path = pl.col("path").fill_null("")
    escapes = path.str.starts_with("/") | path.str.contains(r"^[A-Za-z]:[\\/]") | path.str.contains(r"(^|[\\/])\.\.([\\/]|$)")
    rules = _common_rules(IMAGE_REQUIRED) + _id_rules(("image_id", "owner_id"), cfg.max_id_len)
    rules.append((escapes, "bad_path", pl.format("path '{}' must be relative and stay inside the raw folder", path)))
    reason, detail = _first_failure(rules)
    return frame.with_columns(reason.alias("reason"), detail.alias("detail"))
