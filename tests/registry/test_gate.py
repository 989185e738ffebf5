"""The champion gate's decisions, as pure functions of metrics, and its section of params.yaml."""

import json

import mlflow
import pytest

from prefgen.params import ConfigError, from_section, load_params
from prefgen.paths import Paths
from prefgen.registry.config import GateFloor, GateMetric, RegistryConfig
from prefgen.registry.gate import NO_GATE_METRIC, decide, read_gate_metrics
from tests.conftest import ROOT

GATE = [GateMetric("eval_mapper.cold_auc", "max", 0.01), GateMetric("eval_generation.fid", "min", 1.0)]
CHAMPION = {"eval_mapper.cold_auc": 0.80, "eval_generation.fid": 40.0}


@pytest.mark.parametrize(("new", "passed", "first_reason"), [
    ({"eval_mapper.cold_auc": 0.795, "eval_generation.fid": 40.9}, True, "eval_mapper.cold_auc 0.7950 vs champion 0.8000 (ok"),
    ({"eval_mapper.cold_auc": 0.78, "eval_generation.fid": 39.0}, False, "eval_mapper.cold_auc 0.7800 vs champion 0.8000 (WORSE: needs >= 0.7900)"),
    ({"eval_mapper.cold_auc": 0.85, "eval_generation.fid": 41.5}, False, "eval_generation.fid 41.5000 vs champion 40.0000 (WORSE: needs <= 41.0000)"),
    ({"eval_mapper.cold_auc": 0.85}, False, "gate metric(s) ['eval_generation.fid'] not measured"),
])
def test_each_metric_is_compared_in_its_direction_within_its_tolerance(new, passed, first_reason):
    decision = decide(GATE, new, "E", CHAMPION, "E")
    assert decision.passed is passed
    assert decision.reasons[0].startswith(first_reason)


def test_the_first_bundle_passes_and_other_evaluation_sets_are_not_compared():
    good = {"eval_mapper.cold_auc": 0.9, "eval_generation.fid": 1.0}
    assert decide(GATE, good, "E", None, None).passed
    other = decide(GATE, good, "E2", CHAMPION, "E1")
    assert not other.passed and "not comparable" in other.reasons[0]
    pinned = decide(GATE, good, "E2", None, None, pinned_eval_set="E1")
    assert not pinned.passed and "params pin E1" in pinned.reasons[0]
    assert not decide(GATE, good, "E", {"eval_mapper.cold_auc": 0.5}, "E").passed  # champion lacks a metric


def test_gate_metrics_are_read_from_the_metrics_files(tmp_path):
    paths = Paths.from_params(load_params(ROOT / "params.yaml")).rooted(tmp_path)
    paths.metrics_file("eval_mapper").parent.mkdir(parents=True)
    paths.metrics_file("eval_mapper").write_text(json.dumps({"cold_auc": 0.8, "ablation": {"fused": {"win": 0.7}}, "bad": "x"}))
    names = ["eval_mapper.cold_auc", "eval_mapper.ablation.fused.win", "eval_mapper.bad", "eval_graph.influence_spearman"]
    assert read_gate_metrics(paths, names) == {"eval_mapper.cold_auc": 0.8, "eval_mapper.ablation.fused.win": 0.7}


FLOORS = [GateFloor("eval_holdout.test.hr10", above_metric="eval_holdout.test.popularity_hr10"),
          GateFloor("eval_holdout.test.hr10_minus_popularity_ci_low")]


def test_a_bundle_under_a_floor_never_passes_the_first_one_included():
    gate = [GateMetric("eval_holdout.test.hr10", tolerance=0.01)]
    good = {"eval_holdout.test.hr10": 0.5, "eval_holdout.test.popularity_hr10": 0.3, "eval_holdout.test.hr10_minus_popularity_ci_low": 0.1}
    assert decide(gate, good, "E", None, None, floors=FLOORS).passed
    under = good | {"eval_holdout.test.popularity_hr10": 0.5}
    refused = decide(gate, under, "E", None, None, floors=FLOORS)
    assert not refused.passed and refused.reasons == [
        "eval_holdout.test.hr10 0.5000 is not above eval_holdout.test.popularity_hr10 0.5000 (BELOW FLOOR)"]
    straddles = decide(gate, good | {"eval_holdout.test.hr10_minus_popularity_ci_low": -0.01}, "E", good, "E", floors=FLOORS)
    assert not straddles.passed and "is not above the floor 0.0000" in straddles.reasons[0]  # better than the champion, yet under
    lacking = decide(gate, {"eval_holdout.test.hr10": 0.5}, "E", None, None, floors=FLOORS)
    assert not lacking.passed and "not measured for this bundle" in lacking.reasons[0]


def test_the_registry_reads_every_metric_its_gate_and_floors_judge():
    cfg = RegistryConfig(gate_metrics=[GateMetric("eval_holdout.test.hr10")], floors=FLOORS)
    assert cfg.judged_metrics() == ["eval_holdout.test.hr10", "eval_holdout.test.popularity_hr10",
                                    "eval_holdout.test.hr10_minus_popularity_ci_low"]
    with pytest.raises(ConfigError, match="'hr10' must read '<metrics file>.<key>'"):
        GateFloor("hr10")


@pytest.mark.parametrize(("section", "message"), [
    ({"gate_metrics": [{"name": "eval_mapper.cold_auc", "direction": "up"}]}, "direction must be 'max' or 'min'"),
    ({"gate_metrics": [{"name": "cold_auc"}]}, "must read '<metrics file>.<key>'"),
    ({"gate_metrics": [{"name": "a.b", "tolerance": -1}]}, "tolerance must be >= 0"),
    ({"gate_metrics": [{"name": "a.b"}, {"name": "a.b"}]}, "names a metric twice"),
    ({"gate_metrics": [{"name": "a.b", "tolerence": 0.1}]}, "unknown key(s) ['tolerence']"),
    ({"eval_set": ["split", "data/truth/world-v1"]}, "'data/truth/world-v1' is not a catalogue key"),
])
def test_a_bad_registry_section_is_refused_with_its_reason(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        from_section(RegistryConfig, section, "registry")


def test_a_gate_with_no_metric_makes_no_champion_only_promote_does(tmp_path):
    from prefgen import tracking
    from prefgen.registry import store
    from prefgen.tracking_config import TrackingConfig
    from tests.registry.bundles import make_bundle

    assert decide([], {}, "E", None, None).reasons == [NO_GATE_METRIC]
    assert not decide([], {"eval_mapper.cold_auc": 0.9}, "E", None, None).passed  # even the first bundle
    tracking.configure(TrackingConfig(default_uri="sqlite:///mlruns.db", experiment="no-gate"), tmp_path)
    client, cfg = mlflow.MlflowClient(), RegistryConfig(gate_metrics=[])
    with mlflow.start_run(run_name="register"):
        version, _ = store.register(client, cfg, make_bundle(tmp_path, 1)[0], {}, "E", {})
    decision = store.gate(client, cfg, version)
    assert not decision.passed and decision.reasons == ["no gate metric: a bundle becomes champion only by `prefgen promote`"]
    assert store.version_by_alias(client, cfg.model_name, store.CHAMPION) is None
    assert store.version_by_alias(client, cfg.model_name, store.CHALLENGER).version == version.version
    store.promote(client, cfg.model_name, str(version.version), "looked at the gallery")
    assert store.version_by_alias(client, cfg.model_name, store.CHAMPION).version == version.version
