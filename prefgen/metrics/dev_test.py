"""Dev and test halves of an evaluation set: choices read dev, reported figures are test.

Every evaluation unit (a segment, a group, a segment pair with its prompt and noise seed, a cold image) falls in
one half by a hash of its key, so it keeps its half when the set grows and two stages that split on the same key
agree. A choice (an epoch, a setting, a sampler weight) may read `dev` only; the gate and the headline figures
read `test`.

    half(key) = "test" if sha256("prefgen-dev-test:" + key)[0] is odd else "dev"
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

HALVES = ("dev", "test")
_SALT = "prefgen-dev-test:"


def half(key: str) -> str:
    """The half an evaluation unit belongs to, from its key alone."""
    return HALVES[hashlib.sha256((_SALT + key).encode("utf-8")).digest()[0] & 1]


def in_test_half(keys: Iterable[str]) -> np.ndarray:
    """A bool array, True where the unit with that key is in the test half."""
    return np.array([half(key) == "test" for key in keys], dtype=bool)
