"""The Prefect retrain flow for real (temporary local server), with MLflow lineage read back."""

import json

import mlflow
import pytest

from flows.retrain import retrain
from prefgen import pipeline, tracking
from prefgen.config import load_params, tracking_config

pytestmark = pytest.mark.slow


def test_retrain_runs_stages_in_order_and_records_lineage(project):
    first = retrain(str(project))
    assert [r["stage"] for r in first] == pipeline.stage_order(project)
    assert all(r["ran"] for r in first)

    tracking.configure(tracking_config(load_params(project / "params.yaml")), project)
    runs = {r.data.tags["prefgen.stage"]: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert sorted(runs) == sorted(pipeline.stage_order(project))
    world = json.loads((project / "data" / "metrics" / "synth.json").read_text())["world_sha256"]
    assert {s: r.data.tags.get("world.sha256") for s, r in runs.items()} == dict.fromkeys(runs, world)  # every run names its world
    run = runs["ingest"]
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["prefgen.stage"] == "ingest"
    assert tags["prefect.flow_run_id"]
    assert len(tags["git.commit"]) == 40
    ingest_result = next(r for r in first if r["stage"] == "ingest")
    assert json.loads(tags["dvc.lock.outs"]) == ingest_result["lock"]["outs"]
    assert json.loads(tags["dvc.lock.deps"])["data/01_raw/world-v1"].endswith(".dir")
    assert metrics["read"] == metrics["valid"] + metrics["quarantined"] > 0
    assert run.data.params["max_id_len"] == "256"

    second = retrain(str(project))
    assert not any(r["ran"] for r in second)  # nothing changed: no stage runs
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == len(runs)
