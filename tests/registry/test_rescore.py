"""The champion judged again where the challenger was judged: which stages run on its models, and how the gate uses it."""

import json

import mlflow
import pytest
import torch

from prefgen import tracking
from prefgen.eval import holdout
from prefgen.generation.config import GuidanceConfig
from prefgen.params import load_params
from prefgen.registry import store
from prefgen.registry.bundle import Bundle, assemble
from prefgen.registry.config import GateFloor, GateMetric, RegistryConfig
from prefgen.rescore import rescore_bundle, stages_to_rerun
from prefgen.tracking_config import TrackingConfig
from prefgen.vision.config import VisualFeaturesConfig
from tests.conftest import ROOT
from tests.eval.test_holdout import CFG, planted_step1, world, write_step1
from tests.registry.bundles import make_bundle, model_folders

GATE = [GateMetric("eval_holdout.test.hr10", tolerance=0.02)]
FLOOR = [GateFloor("eval_holdout.test.hr10", above_metric="eval_holdout.test.popularity_hr10")]


def test_only_the_evaluations_and_what_a_model_feeds_them_run_again():
    assert [s.name for s in stages_to_rerun(["eval_holdout.test.hr10"])] == ["eval_holdout"]
    assert [s.name for s in stages_to_rerun(["eval_mapper.cold_auc", "eval_graph.x"])] == ["eval_graph", "visual_features", "eval_mapper"]
    with pytest.raises(ValueError, match=r"gate metric\(s\) of \['nope'\]: no such stage"):
        stages_to_rerun(["nope.x"])


def planted_bundle(tmp_path) -> Bundle:
    """A bundle whose graph part is a planted Step 1 (tests/eval/test_holdout.py); the other parts are stand-ins."""
    parts = model_folders(tmp_path, 0)
    write_step1(planted_step1(), parts["graph"])
    assemble(parts, torch.ones(3, 4), VisualFeaturesConfig(), GuidanceConfig(steps=5), {}, tmp_path / "bundle")
    return Bundle.load(tmp_path / "bundle")


def test_a_bundle_is_judged_on_this_pipelines_data_and_nothing_of_it_is_written(tmp_path):
    tables, split_path = world(tmp_path)
    params = load_params(ROOT / "params.yaml")
    params["paths"] |= {"tables": "tables", "split": "split.parquet"}
    params["eval_holdout"] = {"negatives": CFG.negatives, "k": CFG.k, "seed": CFG.seed, "bootstrap": CFG.bootstrap}
    bundle = planted_bundle(tmp_path)
    names = ["eval_holdout.test.hr10", "eval_holdout.dev.popularity_hr10"]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rescored = rescore_bundle(params, tmp_path, bundle, names, log=lambda line: None)
    direct = holdout.evaluate(CFG, tables, split_path, bundle.model_dir("graph"))
    assert rescored == {"eval_holdout.test.hr10": direct["test"]["hr10"],
                        "eval_holdout.dev.popularity_hr10": direct["dev"]["popularity_hr10"]}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def registered(tmp_path, cfg, seed, metrics, eval_set):
    with mlflow.start_run(run_name="register"):
        version, _ = store.register(mlflow.MlflowClient(), cfg, make_bundle(tmp_path, seed)[0], metrics, eval_set, {})
    return version


@pytest.mark.parametrize(("champion_again", "passed"), [(0.50, True), (0.70, False), (None, False)])
def test_a_champion_judged_on_another_window_is_judged_again_on_the_challengers(tmp_path, champion_again, passed):
    tracking.configure(TrackingConfig(default_uri="sqlite:///mlruns.db", experiment="rescore"), tmp_path)
    client, cfg = mlflow.MlflowClient(), RegistryConfig(eval_set=["split"], gate_metrics=GATE, floors=FLOOR)
    first = registered(tmp_path, cfg, 1, {"eval_holdout.test.hr10": 0.9, "eval_holdout.test.popularity_hr10": 0.3}, "W1")
    assert store.gate(client, cfg, first).passed
    second = registered(tmp_path, cfg, 2, {"eval_holdout.test.hr10": 0.6, "eval_holdout.test.popularity_hr10": 0.3}, "W2")
    calls = []

    def rescore(champion):
        calls.append(champion.version)
        return None if champion_again is None else {"eval_holdout.test.hr10": champion_again, "eval_holdout.test.popularity_hr10": 0.3}

    decision = store.gate(client, cfg, second, rescore)
    assert calls == [first.version] and decision.passed is passed
    champion = store.version_by_alias(client, cfg.model_name, store.CHAMPION).version
    assert champion == (second.version if passed else first.version)
    tags = client.get_model_version(cfg.model_name, second.version).tags
    if champion_again is None:  # judging it again failed: its own figures, on another window, are not comparable
        assert "not comparable" in decision.reasons[0] and "gate.champion_rescored" not in tags
    else:
        assert decision.reasons[-1] == f"champion version {first.version} judged again on this bundle's evaluation set"
        assert json.loads(tags["gate.champion_rescored"])["eval_holdout.test.hr10"] == champion_again


def test_a_bundle_under_a_floor_is_not_judged_against_the_champion_at_all(tmp_path):
    tracking.configure(TrackingConfig(default_uri="sqlite:///mlruns.db", experiment="rescore"), tmp_path)
    client, cfg = mlflow.MlflowClient(), RegistryConfig(eval_set=["split"], gate_metrics=GATE, floors=FLOOR)
    first = registered(tmp_path, cfg, 1, {"eval_holdout.test.hr10": 0.9, "eval_holdout.test.popularity_hr10": 0.3}, "W1")
    store.gate(client, cfg, first)
    under = registered(tmp_path, cfg, 2, {"eval_holdout.test.hr10": 0.2, "eval_holdout.test.popularity_hr10": 0.3}, "W2")
    decision = store.gate(client, cfg, under, lambda champion: pytest.fail("a bundle under a floor needs no comparison"))
    assert not decision.passed and "BELOW FLOOR" in decision.reasons[0]


def test_a_champion_judged_under_older_metric_names_is_judged_again_not_stranded(tmp_path):
    tracking.configure(TrackingConfig(default_uri="sqlite:///mlruns.db", experiment="rescore"), tmp_path)
    client = mlflow.MlflowClient()
    old = RegistryConfig(eval_set=["split"], gate_metrics=[GateMetric("eval_holdout.hr10")])  # a flat name, since renamed
    first = registered(tmp_path, old, 1, {"eval_holdout.hr10": 0.9}, "E")
    assert store.gate(client, old, first).passed
    cfg = RegistryConfig(eval_set=["split"], gate_metrics=GATE)
    second = registered(tmp_path, cfg, 2, {"eval_holdout.test.hr10": 0.6}, "E")  # the same evaluation set
    assert "not comparable" in store.gate(client, cfg, second).reasons[0]  # without judging it again: stranded
    third = registered(tmp_path, cfg, 3, {"eval_holdout.test.hr10": 0.6}, "E")
    decision = store.gate(client, cfg, third, lambda champion: {"eval_holdout.test.hr10": 0.55})
    assert decision.passed and store.version_by_alias(client, cfg.model_name, store.CHAMPION).version == third.version
