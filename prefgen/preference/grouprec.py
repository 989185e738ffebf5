"""Group-recommendation datasets in the AGREE / ConsRec format (../shared/data/README.md).

Files, all whitespace separated, ids are non-negative integers:

    userRatingTrain.txt / groupRatingTrain.txt     `id item [rating [ts]]`
    userRatingTest.txt  / groupRatingTest.txt      `id item` (one held-out positive per line)
    userRatingNegative.txt / groupRatingNegative.txt  `(id,item) n1 ... n100`, aligned with Test
    groupMember.txt                                `group m1,m2,...`
    userFollow.txt (optional)                      `user:f1 f2 ...`

`read_dataset` parses them with line-numbered errors; `import_to_raw_logs` writes
the contract's raw log format (docs/DATA.md) so the same pipeline ingests them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class FormatError(ValueError):
    """A dataset file breaks the format; the message names file and line."""


_MAX_ID_DIGITS = 18  # ids must fit int64; any range is fine, they are renumbered densely (`densify`)


def _id(text: str, where: str) -> int:
    if not text.isdigit():
        raise FormatError(f"{where}: {text[:40]!r} is not a non-negative integer id")
    if len(text) > _MAX_ID_DIGITS:
        raise FormatError(f"{where}: id {text[:40]!r} is out of range (more than {_MAX_ID_DIGITS} digits)")
    return int(text)


@dataclass
class TestSet:
    ids: np.ndarray  # (n,) user or group ids
    positives: np.ndarray  # (n,)
    negatives: np.ndarray  # (n, m)


@dataclass
class GroupRecData:
    user_train: np.ndarray  # (n, 2) user, item
    group_train: np.ndarray  # (n, 2) group, item
    user_test: TestSet
    group_test: TestSet
    members: dict[int, list[int]]  # group -> members
    follows: np.ndarray | None  # (n, 2) follower, followee


def _pairs(path: Path) -> np.ndarray:
    rows = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise FormatError(f"{path.name}:{no}: expected 'id item [rating [ts]]', got {line[:80]!r}")
        rows.append((_id(parts[0], f"{path.name}:{no}"), _id(parts[1], f"{path.name}:{no}")))
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _test_set(test: Path, negative: Path) -> TestSet:
    pairs = _pairs(test)
    negs, ids = [], []
    for no, line in enumerate(negative.read_text().splitlines(), 1):
        if not line.strip():
            continue
        head, *rest = line.split()
        where = f"{negative.name}:{no}"
        if head.count(",") != 1:
            raise FormatError(f"{where}: expected '(id,item) n1 ... nK', got {line[:80]!r}")
        a, b = head.strip("()").split(",")
        ids.append((_id(a, where), _id(b, where)))
        negs.append([_id(x, where) for x in rest])
    if len({len(n) for n in negs}) > 1:
        raise FormatError(f"{negative.name}: rows have different numbers of negatives")
    if [tuple(p) for p in pairs.tolist()] != ids:
        raise FormatError(f"{negative.name} is not aligned with {test.name} (the (id,item) heads differ)")
    return TestSet(pairs[:, 0], pairs[:, 1], np.array(negs, dtype=np.int64))


def _members(path: Path) -> dict[int, list[int]]:
    out = {}
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{no}"
        parts = line.split()
        if len(parts) != 2:
            raise FormatError(f"{where}: expected 'group m1,m2,...', got {line[:80]!r}")
        group = _id(parts[0], where)
        out[group] = [_id(m, where) for m in parts[1].split(",") if m]
        if not out[group]:
            raise FormatError(f"{path.name}:{no}: group {group} has no members")
    return out


def _follows(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    rows = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{no}"
        if ":" not in line:
            raise FormatError(f"{where}: expected 'user:f1 f2 ...', got {line[:80]!r}")
        user, rest = line.split(":", 1)
        rows += [(_id(user.strip(), where), _id(f, where)) for f in rest.split()]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def self_follows(follows: np.ndarray) -> np.ndarray:
    """Mask of the follow rows from a user to themself (Mafengwo has 9): kept when read, never used as social signal."""
    return follows[:, 0] == follows[:, 1]


def read_dataset(folder: Path) -> GroupRecData:
    def need(name: str) -> Path:
        if not (folder / name).is_file():
            raise FormatError(f"{folder}: missing {name}")
        return folder / name

    return GroupRecData(
        user_train=_pairs(need("userRatingTrain.txt")), group_train=_pairs(need("groupRatingTrain.txt")),
        user_test=_test_set(need("userRatingTest.txt"), need("userRatingNegative.txt")),
        group_test=_test_set(need("groupRatingTest.txt"), need("groupRatingNegative.txt")),
        members=_members(need("groupMember.txt")), follows=_follows(folder / "userFollow.txt"))


def densify(data: GroupRecData) -> GroupRecData:
    """Renumber users, items and groups 0..n-1 (sorted raw order), so sparse or huge ids cost nothing."""
    follows = data.follows if data.follows is not None else np.zeros((0, 2), dtype=np.int64)
    member_rows = np.array([(g, u) for g, ms in sorted(data.members.items()) for u in ms], dtype=np.int64).reshape(-1, 2)
    users = np.unique(np.concatenate([data.user_train[:, 0], member_rows[:, 1], data.user_test.ids, follows.ravel()]))
    groups = np.unique(np.concatenate([data.group_train[:, 0], member_rows[:, 0], data.group_test.ids]))
    items = np.unique(np.concatenate([data.user_train[:, 1], data.group_train[:, 1], data.user_test.positives,
                                      data.group_test.positives, data.user_test.negatives.ravel(), data.group_test.negatives.ravel()]))

    def pairs(rows: np.ndarray, ids: np.ndarray, second: np.ndarray) -> np.ndarray:
        return np.stack([np.searchsorted(ids, rows[:, 0]), np.searchsorted(second, rows[:, 1])], axis=1).reshape(-1, 2)

    def test(t: TestSet, ids: np.ndarray) -> TestSet:
        return TestSet(np.searchsorted(ids, t.ids), np.searchsorted(items, t.positives), np.searchsorted(items, t.negatives))

    members: dict[int, list[int]] = {}
    for g, u in pairs(member_rows, groups, users).tolist():
        members.setdefault(g, []).append(u)
    return GroupRecData(pairs(data.user_train, users, items), pairs(data.group_train, groups, items),
                        test(data.user_test, users), test(data.group_test, groups), members,
                        pairs(data.follows, users, users) if data.follows is not None else None)


def input_report(data: GroupRecData, examples: int = 5) -> dict[str, dict]:
    """What the data lacks, counted with example ids: kept and scored (the protocol scores every test row)."""
    user_seen, group_seen = set(data.user_train[:, 0].tolist()), set(data.group_train[:, 0].tolist())
    item_seen = set(data.user_train[:, 1].tolist()) | set(data.group_train[:, 1].tolist())
    followed = set(data.follows.ravel().tolist()) if data.follows is not None else None
    members = {u for ms in data.members.values() for u in ms}
    found = {
        "test users with no training interactions": [u for u in data.user_test.ids.tolist() if u not in user_seen],
        "test groups with no training interactions": [g for g in data.group_test.ids.tolist() if g not in group_seen],
        "test positives never seen in training (user)": [i for i in data.user_test.positives.tolist() if i not in item_seen],
        "test positives never seen in training (group)": [i for i in data.group_test.positives.tolist() if i not in item_seen],
        "groups with interactions but no members": sorted((group_seen | set(data.group_test.ids.tolist())) - set(data.members)),
        "members missing from the follow graph": sorted(members - followed) if followed is not None else [],
        "duplicate training rows": ([f"user {a} item {b}" for a, b in _duplicates(data.user_train)]
                                    + [f"group {a} item {b}" for a, b in _duplicates(data.group_train)]),
    }
    return {name: {"count": len(rows), "examples": rows[:examples]} for name, rows in found.items() if rows}


def _duplicates(pairs: np.ndarray) -> list[tuple[int, int]]:
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    return [tuple(row) for row in unique[counts > 1].tolist()]


def _event(kind: str, event_id: str, seq: int, actor: int, target: int, base_ms: int) -> str:
    # event_id from file and line; ts synthetic, increasing in line order (the files carry no time).
    return json.dumps({"event_id": event_id, "ts": base_ms + seq * 1000, "actor_id": str(actor),
                       "type": kind, "target_id": str(target)})


def import_to_raw_logs(folder: Path, out: Path, base_ms: int = 1_767_225_600_000) -> dict[str, int]:
    """Write the dataset as raw logs (events.jsonl, images.jsonl without pixels) + eval/ copies."""
    data = read_dataset(folder)
    out.mkdir(parents=True, exist_ok=True)
    seq, counts = 0, {}
    with open(out / "events.jsonl", "w", encoding="utf-8") as handle:
        for kind, file, rows in (("click", "userRatingTrain.txt", data.user_train), ("group_click", "groupRatingTrain.txt", data.group_train)):
            for no, (a, b) in enumerate(rows.tolist(), 1):
                handle.write(_event(kind, f"{file}:{no}", seq, a, b, base_ms) + "\n")
                seq += 1
            counts[kind] = len(rows)
        for no, (group, members) in enumerate(sorted(data.members.items()), 1):
            for k, member in enumerate(members):
                handle.write(_event("join", f"groupMember.txt:{no}:{k}", seq, member, group, base_ms) + "\n")
                seq += 1
        counts["join"] = sum(len(m) for m in data.members.values())
        if data.follows is not None:
            kept = np.flatnonzero(~self_follows(data.follows))
            for row in kept.tolist():
                a, b = data.follows[row].tolist()
                handle.write(_event("follow", f"userFollow.txt:{row + 1}", seq, a, b, base_ms) + "\n")
                seq += 1
            counts["follow"] = len(kept)
    items = sorted(set(data.user_train[:, 1]) | set(data.group_train[:, 1]) | set(data.user_test.positives)
                   | set(data.group_test.positives) | set(data.user_test.negatives.ravel()) | set(data.group_test.negatives.ravel()))
    with open(out / "images.jsonl", "w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps({"image_id": str(item), "path": "", "caption": ""}) + "\n")
    (out / "eval").mkdir(exist_ok=True)
    for name in ("userRatingTest.txt", "userRatingNegative.txt", "groupRatingTest.txt", "groupRatingNegative.txt"):
        shutil.copyfile(folder / name, out / "eval" / name)
    return counts | {"images": len(items)}
