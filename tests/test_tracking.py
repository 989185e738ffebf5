"""MLflow tracking against a real local store and a real `mlflow server` process."""

import mlflow
import pytest
import torch

from prefgen import tracking
from prefgen.tracking_config import TrackingConfig
from tests.conftest import mlflow_server

CFG = TrackingConfig(experiment="prefgen-test")


def test_stage_run_logs_params_metrics_and_lineage(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.FLOW_RUN_ENV, "flow-123")
    with tracking.stage_run("ingest", {"max_id_len": 256, "nested": {"a": [1, 2]}}, CFG, tmp_path) as active:
        mlflow.log_metrics(tracking.flatten({"read": 10, "by": {"bad_json": 2}, "name": "x"}))
    run = mlflow.get_run(active.info.run_id)
    assert run.data.params == {"max_id_len": "256", "nested.a": "[1, 2]"}
    assert run.data.metrics == {"read": 10.0, "by.bad_json": 2.0}
    assert run.data.tags["prefect.flow_run_id"] == "flow-123" and run.data.tags["prefgen.stage"] == "ingest"
    assert (tmp_path / "mlruns.db").is_file()
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_a_standalone_run_is_never_taken_for_the_pipelines(tmp_path, monkeypatch):
    """A stage command on explicit paths with --mlflow: tagged standalone, with no stage or flow run tag, so the flow's
    lock tagging (and the registry's search for a stage's run) cannot pick it."""
    monkeypatch.setenv(tracking.FLOW_RUN_ENV, "flow-123")
    with tracking.stage_run("split", {"seed": 7}, TrackingConfig(experiment="prefgen-test", standalone=True), tmp_path) as active:
        mlflow.log_metric("images", 3)
    tags = mlflow.get_run(active.info.run_id).data.tags
    assert tags[tracking.STANDALONE_TAG] == "split" and "prefgen.stage" not in tags and "prefect.flow_run_id" not in tags
    assert tracking.tag_with_lock(CFG, tmp_path, "split", "flow-123", {"deps": {}, "outs": {}}) == []
    with tracking.stage_run("split", {"seed": 7}, CFG, tmp_path) as pipeline_run:  # the pipeline's run of the stage is found
        pass
    assert tracking.tag_with_lock(CFG, tmp_path, "split", "flow-123", {"deps": {}, "outs": {}}) == [pipeline_run.info.run_id]


def test_model_artifacts_round_trip_without_pickle(tmp_path):
    tensors = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "bias": torch.zeros(3)}
    with tracking.stage_run("train", {}, CFG, tmp_path):
        uri = tracking.log_model_artifacts("encoder", tensors, {"dim": 3, "layers": 2})
    loaded, config = tracking.load_model_artifacts(uri)
    assert config == {"dim": 3, "layers": 2}
    assert torch.equal(loaded["weight"], tensors["weight"]) and torch.equal(loaded["bias"], tensors["bias"])
    folder = tmp_path / "mlartifacts"
    assert sorted(p.name for p in folder.rglob("encoder/*")) == ["config.json", "model.safetensors"]


@pytest.mark.slow
def test_tracking_uri_override_reaches_a_real_server(tmp_path, monkeypatch):
    with mlflow_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        with tracking.stage_run("ingest", {"k": 1}, CFG, tmp_path) as active:
            mlflow.log_metric("read", 3)
        assert not (tmp_path / "mlruns.db").exists()
        client = mlflow.MlflowClient(tracking_uri=url)
        assert client.get_run(active.info.run_id).data.metrics == {"read": 3.0}
        # The run was logged outside any flow run, so another flow run's lineage must not claim it.
        assert tracking.tag_with_lock(CFG, tmp_path, "ingest", "flow-x", {"deps": {"a": "1"}, "outs": {}}) == []
        tags = client.get_run(active.info.run_id).data.tags
        assert tags["prefgen.stage"] == "ingest" and "dvc.lock.sha256" not in tags
