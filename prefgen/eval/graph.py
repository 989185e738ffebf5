"""Stage `eval_graph`: how well Step 1's learned member attention recovers true influence.

`influence_spearman`: Spearman correlation between the learned attention of a
group's members and their true influence, averaged over groups with at least
`min_group_size` members (the same groups and averaging as the reference's
`ref_influence_spearman`, so the two compare directly). Written per half
(prefgen/metrics/dev_test.py), a group in the half of its segment id `grp:<id>`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from prefgen.eval.reference import group_spearman
from prefgen.eval.truth import load_truth
from prefgen.metrics.dev_test import in_test_half


def group_rhos(attention: pl.DataFrame, truth_members: pl.DataFrame, min_size: int) -> list[float]:
    """Per group of at least `min_size` members, the Spearman of the learned attention with the true influence."""
    rows = truth_members.select(pl.format("grp:{}", "group_id").alias("group_segment_id"),
                                pl.format("ind:{}", "member_id").alias("member_segment_id"), "influence")
    rows = rows.join(attention, on=["group_segment_id", "member_segment_id"], how="left")
    return group_spearman(rows, "group_segment_id", "influence", ["attention"], min_size)["attention"]


def influence_spearman(attention: pl.DataFrame, truth_members: pl.DataFrame, min_size: int) -> tuple[float, int]:
    rhos = group_rhos(attention, truth_members, min_size)
    return float(np.mean(rhos)), len(rhos)


def members_by_half(truth_members: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The true member rows of each half's groups (a group by its segment id, `grp:<id>`)."""
    test = pl.Series(in_test_half(f"grp:{g}" for g in truth_members["group_id"]))
    return {"dev": truth_members.filter(~test), "test": truth_members.filter(test)}


def run(truth_dir: Path, model_dir: Path, min_size: int) -> dict:
    """influence_spearman of the Step 1 model in `model_dir` against the world whose truth is in `truth_dir`, per half."""
    truth = load_truth(truth_dir)
    attention = pl.read_parquet(model_dir / "attention.parquet")
    out = {"world": truth.world, "world_sha256": truth.world_sha256}
    for name, members in members_by_half(truth.group_members).items():
        rhos = group_rhos(attention, members, min_size)
        out[name] = {"influence_spearman": float(np.mean(rhos))} if rhos else {}
        out[f"{name}_groups"] = len(rhos)
    return out | {"groups_evaluated": out["dev_groups"] + out["test_groups"]}
