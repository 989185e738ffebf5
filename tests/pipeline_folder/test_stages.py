"""A pipeline folder's stages and params: the project's, less what makes or judges a synthetic world."""

import re

import pytest
import yaml

from prefgen.config import checked_params
from prefgen.params import ConfigError, load_params
from prefgen.paths import Paths
from prefgen.pipeline_folder.create import NewFolder, create
from prefgen.pipeline_folder.stages import FolderError, dropped_sections, kept_stages
from tests.conftest import ROOT

FOLDER_STAGES = ["ingest", "split", "centrality", "prepare_images", "image_store", "train_graph", "eval_holdout", "train_clip",
                 "visual_features", "train_mapper", "eval_mapper", "train_vq", "train_w", "train_diffusion", "train_judges", "eval_guidance"]


def project_stage_names() -> list[str]:
    return list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def test_the_folder_keeps_every_stage_but_the_world_the_truth_readers_and_what_only_they_read():
    assert kept_stages(project_stage_names()) == FOLDER_STAGES  # synth, the truth-bound eval_* and train_oracle gone
    assert dropped_sections(project_stage_names(), FOLDER_STAGES) == ["eval_generation", "eval_graph", "reference", "synth",
                                                                       "train_oracle"]
    with pytest.raises(FolderError, match="'lonely' is not in prefgen/stage_table.py"):
        kept_stages(["ingest", "lonely"])


def test_the_generated_folder_has_those_stages_no_code_file_deps_and_no_truth_anywhere(tmp_path, platform):
    folder = tmp_path / "mine"
    create(NewFolder(folder, platform["logs"], platform["images"], platform["catalog"], "quality"))
    stages = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]
    assert list(stages) == FOLDER_STAGES
    for name, stage in stages.items():
        assert f"code.{name}" in stage["params"]
        assert not [dep for dep in stage.get("deps", []) if str(dep).startswith("prefgen/")]
    params = load_params(folder / "params.yaml")
    assert params["profile"] == "quality" and set(params["code"]) == set(FOLDER_STAGES)
    assert params["paths"]["raw"] == str(platform["logs"].resolve()) and params["paths"]["photos"] == str(platform["images"].resolve())
    assert not {"truth", "oracle", "eval_generation"} & set(params["paths"])
    assert all(value.startswith("data/") for key, value in params["paths"].items() if key not in ("raw", "photos"))
    assert params["registry"]["eval_set"] == ["split", "judges"] and params["registry"]["gate_metrics"][0]["name"] == "eval_holdout.test.hr10"
    assert not {"synth", "reference", "eval_graph", "train_oracle", "eval_generation"} & set(params)
    every_text = "".join(p.read_text() for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts)
    assert not re.search(r"\btruth\b", every_text.replace("ground truth", "")), "a path or stage names the truth"
    assert not [p for p in folder.rglob("*truth*")]
    assert "# The single source of every parameter" in (folder / "params.yaml").read_text()  # the project's comments kept
    checked_params(folder / "params.yaml")  # the flows' up-front check accepts the folder's sections
    catalogue = Paths.from_params(params)
    assert str(catalogue.truth) == "<paths.truth not given>"


def test_a_catalogue_lacking_a_key_the_folder_stages_need_is_still_an_error(tmp_path, platform):
    folder = tmp_path / "mine"
    create(NewFolder(folder, platform["logs"], platform["images"], platform["catalog"]))
    params = load_params(folder / "params.yaml")
    del params["paths"]["tables"]
    with pytest.raises(ConfigError, match="params.paths lacks tables"):
        Paths.from_params(params)
    text = (folder / "params.yaml").read_text()
    (folder / "params.yaml").write_text(re.sub(r"\ntrain_w:\n(  .*\n)+", "\n", text))
    with pytest.raises(ConfigError, match="the 'train_w' section is missing"):  # its dvc.yaml lists it
        checked_params(folder / "params.yaml")
