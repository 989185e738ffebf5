"""Reference baselines on tiny hand-checked inputs (the ranking protocol: tests/metrics/test_ranking.py), and the
evaluation stages on a tiny world built by the stage modules before them, every path from the catalogue."""

import json
import shutil
from dataclasses import fields, replace

import numpy as np
import polars as pl
import pytest

from prefgen.data import render
from prefgen.data.config import SynthConfig
from prefgen.eval.reference import cold_auc, colour_histogram
from prefgen.eval.truth import load_truth
from prefgen.params import load_params
from prefgen.paths import Paths
from prefgen.preference import stage_data
from prefgen.stages import (
    centrality as centrality_stage,
    eval_graph as eval_graph_stage,
    ingest as ingest_stage,
    reference as reference_stage,
    split as split_stage,
    synth as synth_stage,
    train_graph as train_graph_stage,
)
from tests.conftest import ROOT


def test_colour_histogram_sees_the_shape_hue():
    spec = render.ImageSpec(hue=5, pattern=0, shape=0, hue_jitter=0, saturation=0.9, value=0.9, scale=0.7,
                            dx=0, dy=0, bg_light=0.9, bg_hue=0.0)
    hist = colour_histogram(np.asarray(render.render(spec, 64)))
    assert np.isclose(hist.sum(), 1.0)
    assert hist[:18].argmax() == int(225 / 360 * 18)  # blue


def test_nearest_centroid_ranks_the_matching_colour_first():
    hist = {"red1": np.eye(4)[0], "red2": np.eye(4)[0], "blue1": np.eye(4)[1], "blue2": np.eye(4)[1]}
    split = pl.DataFrame({"image_id": ["red1", "red2", "blue1", "blue2"], "split": ["train", "cold", "train", "cold"]})
    clicks = pl.DataFrame({"segment_id": ["ind:a", "ind:a"], "image_id": ["red1", "red2"]})
    assert cold_auc(clicks, split, hist)["ref_cold_auc"] == 1.0



TINY = SynthConfig(world="tiny-ref", n_individuals=200, n_communities=3, n_groups=20, group_size_max=10, n_images=80, image_size=16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny world taken through synth, ingest, split and centrality by their stage modules, on a catalogue rooted in a temporary folder."""
    root = tmp_path_factory.mktemp("pipeline")
    paths = Paths.from_params(load_params(ROOT / "params.yaml")).rooted(root)
    synth_stage.run(TINY, paths)
    ingest_stage.run(ingest_stage.load_config(None), paths)
    split_stage.run(split_stage.load_config(None), paths)
    centrality_stage.run(replace(centrality_stage.load_config(None), threads=1), paths, lambda _: None)
    return root, paths


def _outside_the_catalogue(root, paths: Paths) -> list:
    places = [getattr(paths, f.name) for f in fields(Paths)]
    return [p for p in root.rglob("*") if p.is_file() and not any(p == place or p.is_relative_to(place) for place in places)]


def test_reference_judges_the_world_its_truth_folder_names(built, tmp_path):
    root, paths = built
    result = reference_stage.run(reference_stage.load_config({"reference": {"k": 10}}), paths)
    info = json.loads((paths.truth / "world.json").read_text())
    assert (result["world"], result["world_sha256"]) == ("tiny-ref", info["world_sha256"])
    assert 0 <= result["ref_cold_auc"] <= 1 and -1 <= result["test"]["ref_influence_spearman"] <= 1
    assert _outside_the_catalogue(root, paths) == []
    moved = tmp_path / "any-name"
    shutil.copytree(paths.truth, moved)
    assert load_truth(moved).world == "tiny-ref"  # the name comes from world.json, not from the folder
    with pytest.raises(FileNotFoundError, match="no world.json") as raised:
        reference_stage.run(reference_stage.load_config(None), replace(paths, truth=tmp_path / "missing"))
    assert isinstance(raised.value, reference_stage.USER_ERRORS)


def test_train_graph_reads_the_catalogue_and_eval_graph_judges_what_it_wrote(built):
    root, paths = built
    train_items = pl.read_parquet(paths.split).filter(pl.col("split") == "train")["image_id"].to_list()
    paths.visual.mkdir(parents=True, exist_ok=True)
    vectors = np.random.default_rng(0).normal(size=(len(train_items), 4)).tolist()
    pl.DataFrame({"image_id": train_items, "vector": vectors}).write_parquet(paths.visual / "semantic.parquet")
    cfg = train_graph_stage.load_config(None)
    cfg = replace(cfg, model=replace(cfg.model, max_epochs=1, influence_folds=2, dim=8))
    assert cfg.model.item_features is True
    assert stage_data.load_for(replace(cfg.model, item_features=False), paths).data.item_features is None
    lines: list[str] = []
    result = train_graph_stage.run(cfg, paths, lines.append)
    assert result["items_without_features"] == 0 and lines  # every train image has its semantic vector
    assert (paths.graph / "attention.parquet").is_file() and paths.curve_file("train_graph").is_file()
    assert paths.checkpoint_dir("graph").is_dir()
    judged = eval_graph_stage.run(eval_graph_stage.load_config({"eval_graph": {"min_group_size": 3}}), paths)
    assert judged["world"] == "tiny-ref" and judged["groups_evaluated"] == judged["dev_groups"] + judged["test_groups"] > 0
    assert all(-1 <= judged[half]["influence_spearman"] <= 1 for half in ("dev", "test") if judged[f"{half}_groups"])
    assert _outside_the_catalogue(root, paths) == []


def test_the_best_single_centrality_is_chosen_on_dev_groups_and_reported_on_test_ones(tmp_path):
    """Feature `a` follows influence in dev groups and runs against it in test groups, `b` the other way round:
    the choice must be `a` (dev), and its test figure then shows what the choice did not see."""
    from prefgen.eval.reference import influence_spearman
    from prefgen.eval.truth import Truth
    from prefgen.metrics.dev_test import half

    groups = [f"g{k}" for k in range(12)]
    rows = [(g, f"u{g}-{m}", float(m)) for g in groups for m in range(4)]
    members = pl.DataFrame(rows, schema=["group_id", "member_id", "influence"], orient="row")
    sign = {g: 1.0 if half(f"grp:{g}") == "dev" else -1.0 for g in groups}
    assert set(sign.values()) == {1.0, -1.0}
    individuals = pl.DataFrame({"segment_id": [f"ind:{u}" for _, u, _ in rows],
                                "a": [sign[g] * i for g, _, i in rows], "b": [-sign[g] * i for g, _, i in rows]})
    (tmp_path / "centrality").mkdir()
    individuals.write_parquet(tmp_path / "centrality" / "individuals.parquet")
    pl.DataFrame({"group_segment_id": [f"grp:{g}" for g, _, _ in rows], "member_segment_id": [f"ind:{u}" for _, u, _ in rows],
                  "group_size": [4] * len(rows)}).write_parquet(tmp_path / "centrality" / "group_members.parquet")
    truth = Truth("w", "s", pl.DataFrame(), members, pl.DataFrame(), pl.DataFrame())
    result = influence_spearman(truth, tmp_path / "centrality", 3)
    assert result["ref_influence_best_feature"] == "a" and result["groups_evaluated"] == 12
    assert result["dev"]["ref_influence_spearman"] == pytest.approx(1.0)
    assert result["test"]["ref_influence_spearman"] == pytest.approx(-1.0)
