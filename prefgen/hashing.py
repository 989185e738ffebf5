"""sha256 of files, read in blocks: raw logs, bundle files and evaluation sets are named and checked by it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

_BLOCK = 1 << 22  # 4 MiB: a multi-GB raw log is hashed without holding it in memory


def sha256_stream(handle: BinaryIO) -> str:
    """sha256 of what is left to read from an open binary file."""
    digest = hashlib.sha256()
    while block := handle.read(_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)
