"""One case per validation rule, on the vectorised classifier directly."""

from datetime import UTC, datetime

import polars as pl
import pytest

from prefgen.data.config import IngestConfig
from prefgen.data.validate import classify_events, classify_images, parse_ts

NOW = datetime(2026, 11, 27, tzinfo=UTC)
CFG = IngestConfig(max_id_len=10)
OK = {"event_id": "e1", "ts": "2026-03-01T10:00:00Z", "actor_id": "u1", "type": "click", "target_id": "i1"}


def classify(**fields):
    row = OK | fields
    frame = pl.DataFrame([row | {"_line": 1, "_wrong_type": fields.get("_wrong_type")}],
                         schema={**{k: pl.String for k in OK}, "_line": pl.Int64, "_wrong_type": pl.String})
    out = classify_events(frame, CFG, NOW).select("reason", "detail").row(0, named=True)
    return out["reason"], out["detail"]


def test_valid_row_has_no_reason():
    assert classify() == (None, None)


@pytest.mark.parametrize(
    ("fields", "reason", "detail_part"),
    [
        ({"_wrong_type": "actor_id"}, "wrong_type", "actor_id"),
        ({"ts": None}, "missing_field", "ts"),
        ({"target_id": None}, "missing_field", "target_id"),
        ({"type": "like"}, "unknown_type", "'like'"),
        ({"actor_id": "   "}, "empty_id", "actor_id"),
        ({"target_id": ""}, "empty_id", "target_id"),
        ({"event_id": "x" * 11}, "id_too_long", "11 characters"),
        ({"actor_id": "u\x001"}, "bad_id", "control"),
        ({"ts": "2026-02-30T10:00:00Z"}, "bad_timestamp", "2026-02-30"),
        ({"ts": "2026-03-01T10:00:00"}, "bad_timestamp", "offset"),
        ({"ts": "yesterday"}, "bad_timestamp", "yesterday"),
        ({"ts": "1999-12-31T23:59:59Z"}, "timestamp_out_of_range", "1999"),
        ({"ts": "2026-11-29T00:00:01Z"}, "timestamp_out_of_range", "ingest time"),
        ({"ts": "1767225"}, "timestamp_out_of_range", "1970"),  # seconds where ms belong
        ({"ts": "8300000000000000"}, "timestamp_out_of_range", "8300000000000000"),  # past year 9999: no crash
        ({"type": "follow", "target_id": "u1"}, "self_follow", "follow"),
        ({"type": "unfollow", "target_id": "u1"}, "self_follow", "unfollow"),
    ],
)
def test_each_rule(fields, reason, detail_part):
    got_reason, detail = classify(**fields)
    assert got_reason == reason
    assert detail_part in detail


def test_first_failing_rule_wins():
    assert classify(type="like", actor_id="")[0] == "unknown_type"


def test_timestamps_accept_offsets_fractions_and_epoch_ms():
    ts = pl.Series(["2026-03-01T12:00:00+02:00", "2026-03-01T10:00:00.250Z", "1772359200000", "2026-03-01 10:00:00Z"])
    got = parse_ts(ts).to_list()
    assert [t.isoformat() for t in got] == [
        "2026-03-01T10:00:00+00:00", "2026-03-01T10:00:00.250000+00:00", "2026-03-01T10:00:00+00:00", "2026-03-01T10:00:00+00:00"
    ]


def test_same_follow_target_of_another_type_is_fine():
    assert classify(type="click", target_id="u1") == (None, None)


@pytest.mark.parametrize(("path", "reason"), [("a/b.png", None), ("", None), (None, None), ("/etc/passwd", "bad_path"),
                                              ("../x.png", "bad_path"), ("a/../../x.png", "bad_path"), ("C:\\x.png", "bad_path")])
def test_image_paths(path, reason):
    frame = pl.DataFrame([{"image_id": "i1", "path": path, "caption": "c", "owner_id": None, "_line": 1, "_wrong_type": None}],
                         schema={"image_id": pl.String, "path": pl.String, "caption": pl.String, "owner_id": pl.String,
                                 "_line": pl.Int64, "_wrong_type": pl.String})
    assert classify_images(frame, CFG)["reason"][0] == reason
