"""The raw files an ingest may read, and the lock that makes it the only writer of its output.

`discover` never opens anything but regular files inside the raw folder: a FIFO,
socket or device could block a read forever and a symbolic link leaving the
folder could expose any file on the machine, so both are listed with a reason
(contract.SKIP_REASONS) and left alone. A file that cannot be opened or hashed is
still returned, with its error, so the ingest records it as `unreadable_file`.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from prefgen.data import contract as c
from prefgen.data.readers import file_format
from prefgen.hashing import sha256_stream

_IMAGES_NAME = ("images",)
_ASSET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
_LOCK_POLL_S = 0.1


class IngestError(RuntimeError):
    """The whole input is unusable; nothing was written."""


@dataclass
class RawFile:
    path: Path
    source: str  # path relative to raw_dir, POSIX separators: the lineage key
    kind: str  # events | images
    sha256: str  # "" when the file could not be read
    nbytes: int
    error: str | None = None  # why it could not be opened or hashed: ingested as `unreadable_file`


class Discovered(NamedTuple):
    files: list[RawFile]
    ignored: list[str]  # not a raw log by name
    skipped: dict[str, str]  # never opened: {source: one of contract.SKIP_REASONS}


def _hash_regular(path: Path) -> tuple[str, int]:
    """sha256 and size; opened without blocking, so a FIFO swapped in after the check cannot hang it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return sha256_stream(handle), info.st_size


def _skip_reason(path: Path, root: Path) -> str | None:
    """Why `path` must not be opened, or None; directories are 'dir' (walked, not read)."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target != root and root not in target.parents:
            return "symlink_outside_raw"
    try:
        mode = path.stat().st_mode
    except OSError:  # a dangling link or a file gone since listed: opening it fails, recorded as unreadable
        return None
    if stat.S_ISDIR(mode):
        return "dir"
    return None if stat.S_ISREG(mode) else "not_regular_file"


def discover(raw_dir: Path) -> Discovered:
    """Raw log files under raw_dir (sorted, hidden paths skipped), the names ignored and the files skipped."""
    if not raw_dir.is_dir():
        raise IngestError(f"raw log folder not found: {raw_dir}")
    root = Path(os.path.realpath(raw_dir))
    found, ignored, skipped = [], [], {}
    for path in sorted(raw_dir.rglob("*")):
        rel = path.relative_to(raw_dir).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        reason = _skip_reason(path, root)
        if reason == "dir":
            continue
        if reason:
            skipped[rel] = reason
            continue
        fmt = file_format(path)
        if fmt is None:
            if path.suffix.lower() not in _ASSET_SUFFIXES:  # pixels beside a manifest are expected
                ignored.append(rel)
            continue
        kind = "images" if path.name.startswith(_IMAGES_NAME) and fmt == "jsonl" else "events"
        try:
            found.append(RawFile(path, rel, kind, *_hash_regular(path)))
        except OSError as err:
            found.append(RawFile(path, rel, kind, "", 0, error=f"{type(err).__name__}: {err}"))
    return Discovered(found, ignored, skipped)


@contextmanager
def output_lock(out_dir: Path, timeout_s: float) -> Iterator[None]:
    """Be the only ingest writing to out_dir, waiting up to timeout_s for another to finish.

    Without it a second run would clear the first one's staging folder as a killed
    run's leftovers. flock is released by the kernel when its holder dies, so a
    killed run never leaves the folder locked.
    """
    path = out_dir / c.LOCK_FILE
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IngestError(f"another ingest is writing to {out_dir} (it holds {path}); "
                                      f"gave up after {timeout_s:g}s (params ingest.lock_timeout_s)") from None
                time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
