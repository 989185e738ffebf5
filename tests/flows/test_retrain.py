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
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["prefgen.stage"] == "ingest"
    assert tags["prefect.flow_run_id"]
    assert len(tags["git.commit"]) == 40
    assert json.loads(tags["dvc.lock.outs"]) == first[0]["lock"]["outs"]
    assert json.loads(tags["dvc.lock.deps"])["tests/data/sample_log"].endswith(".dir")
    assert metrics["read"] == metrics["valid"] + metrics["quarantined"] > 0
    assert run.data.params["max_id_len"] == "256"

    second = retrain(str(project))
    assert not any(r["ran"] for r in second)  # nothing changed: no stage runs
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 1
