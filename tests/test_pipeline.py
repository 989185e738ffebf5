"""The DVC spine for real: `dvc repro` in a throwaway git repo, stage order, forget -> rerun."""

import json
import sys

import pytest

from prefgen import pipeline
from tests.conftest import ROOT, run

pytestmark = pytest.mark.slow


def dvc(repo, *args):
    return run([sys.executable, "-m", "dvc", *args], repo, activate=True).stdout


def test_stage_order_follows_deps(tmp_path):
    (tmp_path / "params.yaml").write_text("a: {out: data/a}\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  c: {cmd: x, deps: [data/b/file.parquet], outs: [data/c]}\n"
        "  b: {cmd: x, deps: [data/a], outs: [data/b]}\n"
        "  a: {cmd: x, deps: [raw], outs: ['${a.out}']}\n"
    )
    assert pipeline.stage_order(tmp_path) == ["a", "b", "c"]
    assert pipeline.stage_order(ROOT) == ["synth", "ingest", "split", "centrality", "train_clip", "reference", "visual_features",
                                          "train_graph", "eval_graph", "train_mapper", "eval_mapper"]


def test_flow_helpers_run_stages_without_an_activated_virtualenv(project, monkeypatch):
    """`.venv/bin/python -m flows.retrain` must work with a PATH that has no `python` of the venv."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert pipeline.is_changed(project, "ingest")
    pipeline.repro(project, "synth")
    lines = pipeline.repro(project, "ingest")
    assert any("ingest [1/" in line for line in lines)
    assert not pipeline.is_changed(project, "ingest")


def test_repro_then_noop_then_forget_reruns(project):
    out = dvc(project, "repro")
    for stage in pipeline.stage_order(project):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["read"] == metrics["valid"] + metrics["quarantined"] > 0
    assert metrics["tables"]["events"] > 0

    again = dvc(project, "repro")
    assert "Running stage" not in again and "didn't change" in again
    assert not pipeline.is_changed(project, "ingest")

    run([sys.executable, "-m", "prefgen", "forget", "u1", "--by", "test"], project)
    assert pipeline.is_changed(project, "ingest")  # the tables changed under DVC
    rerun = dvc(project, "repro")
    for stage in ("ingest", "split", "centrality", "reference", "train_graph", "eval_graph", "train_mapper", "eval_mapper"):  # downstream of the tables
        assert f"Running stage '{stage}'" in rerun
    assert "Running stage 'synth'" not in rerun
    assert not pipeline.is_changed(project, "ingest")
    lock = pipeline.lock_entry(project, "ingest")
    assert lock["outs"]["data/02_tables"].endswith(".dir")
    assert json.loads((project / "data" / "metrics" / "reference.json").read_text())["ref_cold_auc"] > 0.5
    assert lock["params"]["params.yaml"]["ingest"]["max_id_len"] == 256
