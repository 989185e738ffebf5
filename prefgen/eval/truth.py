"""Reading a synthetic world's ground truth: evaluation code only.

Training stages must never call this (tests/test_truth_guard.py watches every
file a training stage opens). Every metric computed on truth carries the
world's name and content hash, so numbers from different worlds never mix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from prefgen.data.tastes import Tastes


@dataclass
class Truth:
    world: str
    world_sha256: str
    individuals: pl.DataFrame  # individual_id, community, persuasiveness, pagerank, activity, taste
    group_members: pl.DataFrame  # group_id, member_id, influence
    groups: pl.DataFrame  # group_id, taste
    images: pl.DataFrame  # image_id, hue, pattern, shape (+ names)

    def segment_tastes(self, segments: list[str]) -> Tastes:
        """The true tastes of namespaced segments ("ind:<id>" individuals, "grp:<id>" groups), in order."""
        tastes = dict(zip(("ind:" + self.individuals["individual_id"]).to_list(), self.individuals["taste"].to_list()))
        tastes |= dict(zip(("grp:" + self.groups["group_id"]).to_list(), self.groups["taste"].to_list()))
        missing = [s for s in segments if s not in tastes]
        if missing:
            raise KeyError(f"{len(missing)} segments have no taste in world '{self.world}', e.g. {missing[:3]}")
        return Tastes.from_flat(np.stack([tastes[s] for s in segments]))


def load_truth(folder: Path) -> Truth:
    """The ground truth of the world in `folder` (synth's truth folder), named by its world.json."""
    info_path = folder / "world.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"no ground truth in {folder}: no world.json (run the synth stage)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    return Truth(info["world"], info["world_sha256"], pl.read_parquet(folder / "individuals.parquet"),
                 pl.read_parquet(folder / "group_members.parquet"), pl.read_parquet(folder / "groups.parquet"),
                 pl.read_parquet(folder / "images.parquet"))
