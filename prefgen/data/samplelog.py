"""A seeded generator of raw social logs in the contract's format.

Used for the demo's sample log (tests/data/sample_log), for tests, and by
benchmarks/ingest.py for its 10M-event file. It is not the synthetic world
(that one carries ground-truth tastes); it only exercises the data contract,
including a chosen share of malformed rows of every kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Malformed-row kinds the generator can inject, with a line that shows each.
# `json_safe` kinds keep the line valid JSON (a pandas baseline can read them).
BAD_KINDS = {
    "missing_field": True,
    "wrong_type": True,
    "unknown_type": True,
    "bad_timestamp": True,
    "timestamp_out_of_range": True,
    "empty_id": True,
    "id_too_long": True,
    "self_follow": True,
    "bad_json": False,
    "not_object": False,
}
_TYPES = np.array(["click", "repost", "comment", "favorite", "follow", "unfollow", "join", "leave", "group_click"])
_TYPE_P = np.array([0.55, 0.06, 0.05, 0.06, 0.12, 0.01, 0.05, 0.01, 0.09])
_BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _targets(rng: np.random.Generator, types: np.ndarray, actors: np.ndarray, n_ind: int, n_grp: int, n_img: int):
    kind = np.where(np.isin(types, ["follow", "unfollow"]), 0, np.where(np.isin(types, ["join", "leave"]), 1, 2))
    # Popularity is heavy-tailed, as in real logs: Zipf-like target draws.
    draw = np.floor(rng.pareto(1.2, size=len(types)) * 5).astype(np.int64)
    ind = draw % n_ind
    ind = np.where(ind == actors, (ind + 1) % n_ind, ind)  # no accidental self-follows
    grp, img = draw % n_grp, draw % n_img
    return np.where(kind == 0, "u" + ind.astype(str), np.where(kind == 1, "g" + grp.astype(str), "img" + img.astype(str)))


def _bad_line(kind: str, event: dict, rng: np.random.Generator) -> str:
    if kind == "missing_field":
        event.pop(rng.choice(["ts", "actor_id", "type", "target_id"]))
    elif kind == "wrong_type":
        event["actor_id"] = [event["actor_id"]]
    elif kind == "unknown_type":
        event["type"] = "like"
    elif kind == "bad_timestamp":
        event["ts"] = "2026-02-30T10:00:00Z"
    elif kind == "timestamp_out_of_range":
        event["ts"] = "1970-01-02T00:00:00Z"
    elif kind == "empty_id":
        event["target_id"] = "  "
    elif kind == "id_too_long":
        event["actor_id"] = "u" * 300
    elif kind == "self_follow":
        event.update(type="follow", target_id=event["actor_id"])
    elif kind == "bad_json":
        return json.dumps(event)[:-7]
    elif kind == "not_object":
        return json.dumps([event["event_id"], event["type"]])
    return json.dumps(event)


def events_lines(n: int, seed: int = 0, bad_share: float = 0.0, bad_kinds: tuple[str, ...] = tuple(BAD_KINDS),
                 n_ind: int = 10_000, n_grp: int = 500, n_img: int = 5_000, id_prefix: str = "e"):
    """Yield `n` JSONL lines; about `bad_share` of them malformed, kinds in turn."""
    rng = np.random.default_rng(seed)
    block = 200_000
    for start in range(0, n, block):
        m = min(block, n - start)
        types = rng.choice(_TYPES, size=m, p=_TYPE_P)
        actor_idx = rng.integers(0, n_ind, size=m)
        actors = np.where(types == "group_click", "g" + (actor_idx % n_grp).astype(str), "u" + actor_idx.astype(str))
        targets = _targets(rng, types, actor_idx, n_ind, n_grp, n_img)
        ts = _BASE_MS + np.sort(rng.integers(0, 300 * 86_400_000, size=m))
        bad = rng.random(m) < bad_share
        for j in range(m):
            event = {"event_id": f"{id_prefix}{start + j}", "ts": int(ts[j]), "actor_id": actors[j],
                     "type": types[j], "target_id": targets[j]}
            if bad[j]:
                yield _bad_line(bad_kinds[(start + j) % len(bad_kinds)], event, rng)
            else:
                yield json.dumps(event)


def write_events(path: Path, n: int, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for line in events_lines(n, **kwargs):
            handle.write(line + "\n")
    return path


def write_images(path: Path, n_img: int) -> Path:
    colours, shapes = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle"]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n_img):
            caption = f"a {colours[i % 4]} {shapes[i % 3]}"
            handle.write(json.dumps({"image_id": f"img{i}", "path": "", "caption": caption}) + "\n")
    return path
