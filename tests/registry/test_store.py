"""The registry against a real `mlflow server` process: the champion gate, promote, rollback, one version per bundle."""

import sqlite3
from contextlib import closing

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from prefgen.registry import store
from prefgen.registry.config import GateMetric, RegistryConfig
from tests.conftest import mlflow_server
from tests.registry.bundles import make_bundle

pytestmark = pytest.mark.slow

CFG = RegistryConfig(gate_metrics=[GateMetric("eval_mapper.cold_auc", "max", 0.01), GateMetric("eval_generation.win_rate", "max", 0.05)])


def register(client, folder, cold_auc, win_rate, eval_set="E1"):
    with mlflow.start_run(run_name="register"):
        version, created = store.register(client, CFG, folder, {"eval_mapper.cold_auc": cold_auc, "eval_generation.win_rate": win_rate},
                                          eval_set, {"git": {"git.commit": "abc"}})
    return version, created


def champion(client):
    return store.version_by_alias(client, CFG.model_name, store.CHAMPION).version


def test_the_gate_refuses_a_worse_bundle_and_champion_moves_by_hand_and_back(tmp_path, monkeypatch):
    with mlflow_server(tmp_path) as url:
        mlflow.set_tracking_uri(url)
        mlflow.set_experiment("registry-test")
        client = mlflow.MlflowClient(url)
        monkeypatch.setenv("PREFGEN_USER", "retrain-bot")

        v1, created = register(client, make_bundle(tmp_path, 1)[0], 0.80, 0.70)
        assert created and store.gate(client, CFG, v1).passed and champion(client) == v1.version

        v2, _ = register(client, make_bundle(tmp_path, 2)[0], 0.70, 0.71)  # cold AUC 0.10 worse: refused
        decision = store.gate(client, CFG, v2)
        assert not decision.passed and champion(client) == v1.version
        assert store.version_by_alias(client, CFG.model_name, store.CHALLENGER).version == v2.version
        tags = client.get_model_version(CFG.model_name, v2.version).tags
        assert tags["gate.decision"] == "refused"
        assert tags["gate.reasons"].startswith("eval_mapper.cold_auc 0.7000 vs champion 0.8000 (WORSE: needs >= 0.7900)")
        assert client.get_run(tags["register.run_id"]).data.tags["gate.decision"] == "refused"

        v3, _ = register(client, make_bundle(tmp_path, 3)[0], 0.795, 0.74)  # within tolerance: passes
        assert store.gate(client, CFG, v3).passed and champion(client) == v3.version

        again, created = register(client, make_bundle(tmp_path / "same", 1)[0], 0.9, 0.9)  # v1's models again
        assert not created and again.version == v1.version
        assert len(client.search_model_versions(f"name = '{CFG.model_name}'")) == 3

        store.promote(client, CFG.model_name, v2.version, "hotfix for segment grp:g7", by="alice")
        assert champion(client) == v2.version
        last = store.history(client, CFG.model_name)[-1]
        assert (last["version"], last["previous"], last["action"], last["by"], last["reason"]) == (str(v2.version), str(v3.version), "promote", "alice", "hotfix for segment grp:g7")
        assert client.get_model_version(CFG.model_name, v2.version).tags["champion.by"] == "alice"

        assert store.rollback(client, CFG.model_name)["version"] == str(v3.version) and champion(client) == v3.version
        assert store.rollback(client, CFG.model_name, "bad night")["version"] == str(v1.version)
        with pytest.raises(store.RegistryError, match="no earlier champion"):
            store.rollback(client, CFG.model_name)
        actions = [(e["action"], e["version"], e["by"]) for e in store.history(client, CFG.model_name)]
        assert actions == [("gate", str(v1.version), "retrain-bot"), ("gate", str(v3.version), "retrain-bot"), ("promote", str(v2.version), "alice"),
                           ("rollback", str(v3.version), "retrain-bot"), ("rollback", str(v1.version), "retrain-bot")]

        with pytest.raises(store.RegistryError, match="--reason is required"):
            store.promote(client, CFG.model_name, v3.version, "  ")
        with pytest.raises(store.RegistryError, match="already champion"):
            store.promote(client, CFG.model_name, v1.version, "again")
        with pytest.raises(store.RegistryError, match="no version 'nightly'"):
            store.resolve(client, CFG.model_name, "nightly")

        v4, _ = register(client, make_bundle(tmp_path, 4)[0], 0.99, 0.99, eval_set="E2")  # better, but on another set
        decision = store.gate(client, CFG, v4)
        assert not decision.passed and "not comparable" in decision.reasons[0] and champion(client) == v1.version


def test_a_store_failing_mid_registration_leaves_no_version_without_its_tags(tmp_path):
    db = tmp_path / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = mlflow.MlflowClient()
    mlflow.set_experiment(experiment_id=client.create_experiment("registry-test", artifact_location=str(tmp_path / "art")))
    folder = make_bundle(tmp_path, 1)[0]
    with closing(sqlite3.connect(db)) as conn, conn:  # the store fails once a version's gate metrics are written
        conn.execute("CREATE TRIGGER lost BEFORE INSERT ON model_version_tags WHEN NEW.key = 'gate.metrics' "
                     "BEGIN SELECT RAISE(ABORT, 'the store went away'); END")
    with pytest.raises(MlflowException):
        register(client, folder, 0.8, 0.7)
    assert client.search_model_versions(f"name = '{CFG.model_name}'") == []  # no version that no digest can find again

    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DROP TRIGGER lost")
    version, created = register(client, folder, 0.8, 0.7)
    metrics = '{"eval_generation.win_rate": 0.7, "eval_mapper.cold_auc": 0.8}'
    assert (created, str(version.version), version.tags["gate.metrics"]) == (True, "1", metrics)
