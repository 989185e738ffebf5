"""Stage eval_holdout: Step 1 on the held-out window's clicks, against popularity, in dev and test halves."""

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
import torch

from prefgen.data import split
from prefgen.data.config import IngestConfig, SplitConfig
from prefgen.data.ingest import run as ingest
from prefgen.eval import holdout
from prefgen.eval.config import EvalHoldoutConfig
from prefgen.metrics.dev_test import half
from prefgen.preference.outputs import Step1
from tests.conftest import event, write_jsonl

NOW = datetime(2026, 11, 27, tzinfo=UTC)
CFG = EvalHoldoutConfig(negatives=5, bootstrap=200)
N_ITEMS, N_USERS = 20, 16


def day(d: int) -> str:
    return f"2026-11-{10 + d:02d}T12:00:00Z"


def planted_step1() -> Step1:
    """User uK likes image i(K % 4) most (their vectors point the same way); the popular images are i10..i13."""
    angles = np.linspace(0, 2 * np.pi, N_ITEMS, endpoint=False)
    items = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], axis=1), dtype=torch.float32)
    p = torch.cat([items[[k % 4 for k in range(N_USERS)]], torch.zeros(N_USERS, 2)], dim=1)
    project = torch.cat([torch.eye(2), torch.zeros(2, 2)], dim=1)
    return Step1(p, items, project, {f"ind:u{k}": k for k in range(N_USERS)}, {f"i{k}": k for k in range(N_ITEMS)})


def world(tmp_path):
    """Training clicks on the popular images i10..i13; in the window (the last 3 of 10 days) each user clicks its
    favourite, plus clicks Step 1 cannot judge: an unknown user, an unknown image, a pair clicked before."""
    rows = [event(event_id=f"t{k}-{j}", actor_id=f"u{k}", target_id=f"i{10 + j}", ts=day(j)) for k in range(N_USERS) for j in range(4)]
    rows += [event(event_id=f"h{k}", actor_id=f"u{k}", target_id=f"i{k % 4}", ts=day(8)) for k in range(N_USERS)]
    rows += [event(event_id="x1", actor_id="stranger", target_id="i1", ts=day(9)),
             event(event_id="x2", actor_id="u0", target_id="never-trained", ts=day(9)),
             event(event_id="x3", actor_id="u1", target_id="i10", ts=day(9))]  # u1 clicked i10 before the window
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    ingest(IngestConfig(), tmp_path / "raw", tmp_path / "tables", now=NOW)
    split.run(SplitConfig(val_fraction=0.0, cold_fraction=0.0, holdout_days=3), tmp_path / "tables", tmp_path / "split.parquet")
    return tmp_path / "tables", tmp_path / "split.parquet"


def test_step1_is_judged_on_fresh_held_out_clicks_of_known_segments_and_images(tmp_path):
    tables, split_path = world(tmp_path)
    step1 = planted_step1()
    rows = holdout.held_out_rows(step1, *holdout.window_clicks(tables, split.holdout_from(split_path)), CFG)
    assert rows.segments == sorted(f"ind:u{k}" for k in range(N_USERS))  # stranger, never-trained and u1's i10 left out
    assert rows.negatives.shape == (N_USERS, 5)
    for segment, positive, negatives in zip(rows.segments, rows.positives, rows.negatives):
        assert positive not in negatives and not set(negatives) & {10, 11, 12, 13}  # never an image the user clicked
        assert len(set(negatives)) == 5


def test_the_metrics_carry_dev_and_test_halves_and_beat_popularity_where_step1_is_right(tmp_path):
    tables, split_path = world(tmp_path)
    graph = tmp_path / "graph"
    metrics = evaluate_planted(tables, split_path, graph)
    assert metrics["positives"] == N_USERS == metrics["dev"]["positives"] + metrics["test"]["positives"]
    test_users = [f"ind:u{k}" for k in range(N_USERS) if half(f"ind:u{k}") == "test"]
    assert metrics["test"]["segments"] == len(test_users) and 0 < len(test_users) < N_USERS
    for name in ("dev", "test"):
        block = metrics[name]
        assert block["hr10"] == 1.0  # the favourite outscores its 5 negatives: rank 0
        assert block["popularity_hr10"] == pytest.approx(1.0)  # all tied at zero clicks: HR@10 of 6 candidates is 1 either way
        assert np.isnan(block["hr10_groups"]) and block["hr10_individuals"] == 1.0
    strict = evaluate_planted(tables, split_path, graph, EvalHoldoutConfig(negatives=5, k=1, bootstrap=200))
    assert strict["test"]["hr1"] == 1.0 and strict["test"]["popularity_hr1"] == pytest.approx(1 / 6)  # ties in expectation
    assert strict["test"]["hr1_minus_popularity"] == pytest.approx(5 / 6)
    assert strict["test"]["hr1_minus_popularity_ci_low"] == pytest.approx(5 / 6) == strict["test"]["hr1_minus_popularity_ci_high"]


def write_step1(step1: Step1, graph) -> None:
    """Step 1's output files (preference/export.py's contract) holding `step1`."""
    from safetensors.torch import save_file

    graph.mkdir(exist_ok=True)
    save_file({"p": step1.p, "items": step1.items, "project": step1.project}, graph / "vectors.safetensors")
    pl.DataFrame({"segment_id": list(step1.segment_row), "row": list(step1.segment_row.values())}).write_parquet(graph / "segments.parquet")
    pl.DataFrame({"image_id": list(step1.item_row), "row": list(step1.item_row.values())}).write_parquet(graph / "items.parquet")


def evaluate_planted(tables, split_path, graph, cfg=CFG) -> dict:
    write_step1(planted_step1(), graph)
    return holdout.evaluate(cfg, tables, split_path, graph)


def test_a_split_without_a_window_is_a_clear_error(tmp_path):
    tables, _ = world(tmp_path)
    split.run(SplitConfig(), tables, tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="has no held-out window: set params split.holdout_days > 0"):
        holdout.evaluate(CFG, tables, tmp_path / "plain.parquet", tmp_path / "graph")
