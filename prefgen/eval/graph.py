"""Stage `eval_graph`: how well Step 1's learned member attention recovers true influence.

`influence_spearman`: Spearman correlation between the learned attention of a
group's members and their true influence, averaged over groups with at least
`min_group_size` members (the same groups and averaging as the reference's
`ref_influence_spearman`, so the two compare directly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from prefgen.eval.reference import group_spearman
from prefgen.eval.truth import load_truth


def influence_spearman(attention: pl.DataFrame, truth_members: pl.DataFrame, min_size: int) -> tuple[float, int]:
    rows = truth_members.select(pl.format("grp:{}", "group_id").alias("group_segment_id"),
                                pl.format("ind:{}", "member_id").alias("member_segment_id"), "influence")
    rows = rows.join(attention, on=["group_segment_id", "member_segment_id"], how="left")
    rhos = group_spearman(rows, "group_segment_id", "influence", ["attention"], min_size)["attention"]
    return float(np.mean(rhos)), len(rhos)


def run(truth_dir: Path, model_dir: Path, min_size: int) -> dict:
    """influence_spearman of the Step 1 model in `model_dir` against the world whose truth is in `truth_dir`."""
    truth = load_truth(truth_dir)
    rho, groups = influence_spearman(pl.read_parquet(model_dir / "attention.parquet"), truth.group_members, min_size)
    return {"world": truth.world, "world_sha256": truth.world_sha256, "influence_spearman": rho, "groups_evaluated": groups}
