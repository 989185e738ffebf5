"""Dev and test halves of an evaluation set: choices read dev, reported figures are test.

Every evaluation unit (a segment, a group, a segment pair with its prompt and noise seed, a cold image) falls in
one half by a hash of its key, so it keeps its half when the set grows and two stages that split on the same key
agree. A choice (an epoch, a setting, a sampler weight) may read `dev` only, through `dev_figure`; the gate
(prefgen/registry/gate.py) and the headline figures read `test`: the gate is the one declared exception, since
judging a finished bundle is reporting, not choosing.

    half(key) = "test" if sha256("prefgen-dev-test:" + key)[0] is odd else "dev"

An evaluation stage's metrics file carries a `dev` and a `test` block with the same figure names, each computed on
that half's units only, and flat only what describes the set (its size, the units per half). A half with no unit
gets an empty block: its figures are not measured rather than made up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

HALVES = ("dev", "test")
_SALT = "prefgen-dev-test:"


def half(key: str) -> str:
    """The half an evaluation unit belongs to, from its key alone."""
    return HALVES[hashlib.sha256((_SALT + key).encode("utf-8")).digest()[0] & 1]


def in_test_half(keys: Iterable[str]) -> np.ndarray:
    """A bool array, True where the unit with that key is in the test half."""
    return np.array([half(key) == "test" for key in keys], dtype=bool)


def rows_by_half(keys: Iterable[str]) -> dict[str, np.ndarray]:
    """{"dev": row indices, "test": row indices} of the units with these keys, in their order."""
    test = in_test_half(keys)
    return {"dev": np.flatnonzero(~test), "test": np.flatnonzero(test)}


def dev_figure(metrics: Mapping[str, Any], name: str) -> Any:
    """The figure `name` (dotted, e.g. "win_rate" or "ablation.fused.win_rate") of a stage's dev half: what a choice
    may read. A name under `test` is refused; a stage with no halves (a training stage's validation figures) is read
    as it is."""
    parts = name.split(".")
    if parts[0] == "test":
        raise ValueError(f"{name!r} is a test figure: a choice reads dev only (dev_figure(metrics, {'.'.join(parts[1:])!r}))")
    parts = parts[1:] if parts[0] == "dev" else parts
    node: Any = metrics["dev"] if "dev" in metrics else metrics
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"no dev figure {name!r} in these metrics (keys there: {sorted(node) if isinstance(node, Mapping) else node!r})")
        node = node[part]
    return node
