"""The social-log data contract: what raw logs may hold and what ingest writes.

docs/DATA.md is the prose version of this module; keep the two in step.
Every table ingest writes has an explicit pyarrow schema here, so downstream
stages can rely on column names and types without looking at the data.
"""

from __future__ import annotations

import pyarrow as pa

# Event types and the kinds of their actor and target. Actor/target kinds are
# implied by the type: raw ids of individuals and groups may collide (Mafengwo has
# a user 3 and a group 3), so later stages namespace them as `ind:` / `grp:`.
EVENT_KINDS: dict[str, tuple[str, str]] = {
    "click": ("individual", "image"),
    "repost": ("individual", "image"),
    "comment": ("individual", "image"),
    "favorite": ("individual", "image"),
    "follow": ("individual", "individual"),
    "unfollow": ("individual", "individual"),
    "join": ("individual", "group"),
    "leave": ("individual", "group"),
    "group_click": ("group", "image"),
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_KINDS)
FOLLOW_TYPES = ("follow", "unfollow")
MEMBERSHIP_TYPES = ("join", "leave")
# Types whose actor is an individual: a deletion request (`prefgen forget`) removes these.
INDIVIDUAL_ACTOR_TYPES = tuple(t for t, (actor, _) in EVENT_KINDS.items() if actor == "individual")
IMAGE_TARGET_TYPES = tuple(t for t, (_, target) in EVENT_KINDS.items() if target == "image")

EVENT_FIELDS = ("event_id", "ts", "actor_id", "type", "target_id")
IMAGE_FIELDS = ("image_id", "path", "caption", "owner_id")
IMAGE_REQUIRED = ("image_id",)
# Fields holding identifiers: non-empty, bounded length, no control characters.
EVENT_ID_FIELDS = ("event_id", "actor_id", "target_id")

# Quarantine reasons, one per malformed-row kind. The code is stable (tests and
# dashboards key on it); the `detail` column says which field and value.
REASONS = (
    "line_too_long",  # the line is longer than ingest.max_line_bytes; skipped without being loaded whole
    "invalid_utf8",  # the line is not valid UTF-8
    "bad_json",  # the line does not parse as JSON (or nests deeper than Python's recursion limit)
    "not_object",  # the line parses but is not a JSON object
    "bad_csv",  # a CSV record with the wrong number of fields, or one the csv module rejects
    "missing_header",  # a CSV whose first row names none of the fields: every record of the file
    "wrong_type",  # a field holds a JSON type the contract does not allow
    "missing_field",  # a required field is absent or null
    "unknown_type",  # `type` is not one of EVENT_TYPES
    "empty_id",  # an id is empty or only whitespace
    "id_too_long",  # an id is longer than ingest.max_id_len characters
    "bad_id",  # an id holds control characters
    "bad_timestamp",  # ts is neither ISO-8601 with an offset nor epoch milliseconds
    "timestamp_out_of_range",  # ts before ingest.ts_min or too far in the future
    "self_follow",  # follow/unfollow of oneself
    "bad_path",  # an image path that is absolute or leaves the raw folder
    "unreadable_file",  # the whole file could not be read (e.g. a corrupt gzip); retried next run, recorded once
)
# Files under the raw folder that ingest never opens, listed with these reasons in its counts.
SKIP_REASONS = (
    "not_regular_file",  # a FIFO, socket or device: reading it could block forever
    "symlink_outside_raw",  # a symbolic link whose target is outside the raw folder
)

TS_TYPE = pa.timestamp("ms", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("actor_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("target_id", pa.string(), nullable=False),
        # Lineage: which raw file and line each event came from, and in which batch.
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("batch", pa.string(), nullable=False),
    ]
)

FOLLOWS_SCHEMA = pa.schema(
    [
        pa.field("follower_id", pa.string(), nullable=False),
        pa.field("followee_id", pa.string(), nullable=False),
        pa.field("since", TS_TYPE, nullable=False),
    ]
)

MEMBERSHIPS_SCHEMA = pa.schema(
    [
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("since", TS_TYPE, nullable=False),
    ]
)

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # relative to the manifest's folder; may be ""
        pa.field("caption", pa.string(), nullable=False),
        # The individual who posted the image, where known: activity on it is
        # activity *received* by them (a centrality feature). Optional.
        pa.field("owner_id", pa.string(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),  # the line, lossily decoded, cut at 2,000 chars
        pa.field("batch", pa.string(), nullable=False),
    ]
)

# One row per raw file ever ingested: the state that makes a rerun read only new files.
SOURCES_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # events | images
        pa.field("batch", pa.string(), nullable=False),
        pa.field("ingested_at", TS_TYPE, nullable=False),
        pa.field("read", pa.int64(), nullable=False),
        pa.field("valid", pa.int64(), nullable=False),
        pa.field("duplicates", pa.int64(), nullable=False),
        pa.field("quarantined", pa.int64(), nullable=False),
        pa.field("forgotten", pa.int64(), nullable=False),
        # Of the duplicates, those whose event_id was known with other content (the first ingested row wins).
        pa.field("conflicts", pa.int64(), nullable=False),
    ]
)

# One row per deletion request (`prefgen forget`). The subject is stored hashed so
# the log itself does not keep the id; ingest drops later events of hashed subjects.
FORGOTTEN_SCHEMA = pa.schema(
    [
        pa.field("subject_sha256", pa.string(), nullable=False),
        pa.field("requested_by", pa.string(), nullable=False),
        pa.field("requested_at", TS_TYPE, nullable=False),
        pa.field("events_removed", pa.int64(), nullable=False),
        pa.field("follows_removed", pa.int64(), nullable=False),
        pa.field("memberships_removed", pa.int64(), nullable=False),
        pa.field("quarantine_removed", pa.int64(), nullable=False),
        # forget.images when asked: drop (their images and the events on them went) or keep (the owner link went).
        pa.field("images", pa.string(), nullable=False),
        pa.field("images_removed", pa.int64(), nullable=False),
    ]
)

# The sha256 of every image id a `drop` request removed, so that later ingests drop
# those images' events from new files without keeping the ids of what was deleted.
FORGOTTEN_IMAGES_SCHEMA = pa.schema([pa.field("image_sha256", pa.string(), nullable=False)])

# Output layout of the ingest stage, relative to its output folder.
EVENTS_DIR = "events"  # a folder of Parquet parts, one per ingest batch
QUARANTINE_DIR = "quarantine"  # likewise
FOLLOWS_FILE = "follows.parquet"
MEMBERSHIPS_FILE = "memberships.parquet"
IMAGES_FILE = "images.parquet"
SOURCES_FILE = "sources.parquet"
FORGOTTEN_FILE = "forgotten.parquet"
FORGOTTEN_IMAGES_FILE = "forgotten_images.parquet"
# Held (flock) by the ingest writing to the folder: a second one waits or fails, never clears its staging.
LOCK_FILE = ".ingest.lock"
