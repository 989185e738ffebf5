"""The pandas baseline for benchmarks/ingest.py: the same validation rules, vectorised,
on chunks read with `pandas.read_json(lines=True, chunksize=...)`.

It writes the same tables (events parts, quarantine, follows, memberships) so
both sides do the same work. Like any `read_json` reader it cannot survive a
line that is not JSON, so the benchmark's log holds only JSON-valid bad rows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prefgen.data.config import IngestConfig
from prefgen.data.contract import EVENT_TYPES, FOLLOW_TYPES, MEMBERSHIP_TYPES

FIELDS = ["event_id", "ts", "actor_id", "type", "target_id"]
ID_FIELDS = ["event_id", "actor_id", "target_id"]
_ISO_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")


def _first_reason(frame: pd.DataFrame, cfg: IngestConfig, now: datetime) -> pd.Series:
    reason = pd.Series(None, index=frame.index, dtype=object)

    def mark(mask: pd.Series, code: str) -> None:
        reason.loc[mask & reason.isna()] = code

    for f in FIELDS:  # strings, or integers for ids and ts
        ok_type = frame[f].map(type).isin([str, int] if f != "type" else [str]) | frame[f].isna()
        mark(~ok_type, "wrong_type")
    for f in FIELDS:
        mark(frame[f].isna(), "missing_field")
    text = {f: frame[f].astype(str) for f in ID_FIELDS}
    mark(~frame["type"].isin(EVENT_TYPES), "unknown_type")
    for f in ID_FIELDS:
        mark(text[f].str.strip().str.len() == 0, "empty_id")
    for f in ID_FIELDS:
        mark(text[f].str.len() > cfg.max_id_len, "id_too_long")
    for f in ID_FIELDS:
        mark(text[f].str.contains(r"[\x00-\x1f\x7f]", regex=True), "bad_id")
    ts = _parse_ts(frame["ts"])
    mark(ts.isna(), "bad_timestamp")
    ts_min = pd.Timestamp(cfg.ts_min)
    mark((ts < ts_min) | (ts > pd.Timestamp(now + timedelta(seconds=cfg.max_future_s))), "timestamp_out_of_range")
    mark(frame["type"].isin(FOLLOW_TYPES) & (text["actor_id"] == text["target_id"]), "self_follow")
    frame["ts_parsed"] = ts
    return reason


def _parse_ts(ts: pd.Series) -> pd.Series:
    as_text = ts.astype(str)
    epoch = as_text.str.fullmatch(r"-?\d{1,19}")
    out = pd.Series(pd.NaT, index=ts.index, dtype="datetime64[ms, UTC]")
    out[epoch] = pd.to_datetime(pd.to_numeric(as_text[epoch], errors="coerce"), unit="ms", utc=True)
    iso = ~epoch & as_text.str.contains(_ISO_OFFSET)
    out[iso] = pd.to_datetime(as_text[iso], format="ISO8601", utc=True, errors="coerce")
    return out


def _latest(events: pd.DataFrame, types: tuple[str, str]) -> pd.DataFrame:
    sub = events[events["type"].isin(types)].sort_values(["ts", "source", "line"])
    last = sub.groupby(["actor_id", "target_id"], sort=True).tail(1)
    return last[last["type"] == types[0]][["actor_id", "target_id", "ts"]]


def run(cfg: IngestConfig, raw_file: Path, out_dir: Path, chunksize: int = 500_000) -> dict[str, int]:
    now = datetime.now(UTC)
    (out_dir / "events").mkdir(parents=True, exist_ok=True)
    (out_dir / "quarantine").mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    kept: list[pd.DataFrame] = []
    counts = {"read": 0, "valid": 0, "duplicates": 0, "quarantined": 0}
    reader = pd.read_json(raw_file, lines=True, chunksize=chunksize, dtype=False, convert_dates=False)
    for i, chunk in enumerate(reader):
        chunk = chunk.reindex(columns=FIELDS)
        chunk["line"] = chunk.index + 1
        reason = _first_reason(chunk, cfg, now)
        bad = chunk[reason.notna()].assign(reason=reason[reason.notna()], source=raw_file.name)
        good = chunk[reason.isna()].copy()
        for f in ID_FIELDS:
            good[f] = good[f].astype(str)
        first = ~good["event_id"].duplicated() & ~good["event_id"].isin(seen)
        seen.update(good["event_id"][first])
        counts["read"] += len(chunk)
        counts["quarantined"] += len(bad)
        counts["valid"] += len(good)
        counts["duplicates"] += int((~first).sum())
        good = good[first].assign(ts=good["ts_parsed"][first], source=raw_file.name)[FIELDS + ["source", "line"]]
        pq.write_table(pa.Table.from_pandas(good, preserve_index=False), out_dir / "events" / f"part-{i:05d}.parquet")
        pq.write_table(pa.Table.from_pandas(bad[["source", "line", "reason"]], preserve_index=False),
                       out_dir / "quarantine" / f"part-{i:05d}.parquet")
        kept.append(good[good["type"].isin(FOLLOW_TYPES + MEMBERSHIP_TYPES)])
    graph = pd.concat(kept) if kept else pd.DataFrame(columns=FIELDS + ["source", "line"])
    _latest(graph, FOLLOW_TYPES).to_parquet(out_dir / "follows.parquet")
    _latest(graph, MEMBERSHIP_TYPES).to_parquet(out_dir / "memberships.parquet")
    return counts
