"""No training stage reads a synthetic world's ground truth.

Three guards: dvc.yaml gives the truth folder only to evaluation stages; no
library module outside prefgen/eval (and the generator that writes it) names
truth at all; and every other stage of dvc.yaml (ingest, split, centrality and
every trainer), run for real by its own command on a tiny world, succeeds with
the truth folder moved out of reach while an audit hook records every file and
folder Python opens or lists (polars, safetensors and torch open files from
native code, which the hook cannot see; moving the folder covers that: such a
read fails the stage).
"""

import os
import sys

import yaml

from prefgen import pipeline
from prefgen.stage_table import STAGES
from tests.conftest import ROOT
from tests.tiny_pipeline import TINY_WORLD, run_command, tiny_params, write_params

EVALUATION_STAGES = {"reference", "eval_graph", "eval_mapper", "eval_generation"}  # stages allowed to read truth (plus `synth`, which writes it)


def test_only_evaluation_stages_depend_on_truth():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    truth_dir = params["paths"]["truth"]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    readers = {stage.name for stage in STAGES if "truth" in stage.reads}
    for name, stage in stages.items():
        deps = " ".join(str(d) for d in stage.get("deps", []))
        reads_truth = truth_dir in deps or "${paths.truth}" in deps
        assert not reads_truth or name in EVALUATION_STAGES, f"stage {name} depends on ground truth"
        assert (name in readers) == reads_truth, f"stage {name}: dvc.yaml and the table of stages disagree on truth"


def test_no_library_module_outside_eval_names_truth():
    allowed = {ROOT / "prefgen" / p for p in ("data/synth.py", "stages/synth.py", "paths.py", "stage_table.py", "stages/reference.py",
                                            "stages/eval_graph.py", "stages/eval_mapper.py", "stages/eval_generation.py",
                                            "registry/config.py",  # the registry's eval_set names what the metrics judged on
                                            "pipeline_folder/stages.py", "pipeline_folder/folder_params.py")}  # to leave it out
    for path in (ROOT / "prefgen").rglob("*.py"):
        if path in allowed or path.is_relative_to(ROOT / "prefgen" / "eval"):
            continue
        code = path.read_text().lower().replace("ground truth", "").replace("ground-truth", "")
        assert "truth" not in code, f"{path.relative_to(ROOT)} mentions truth"


GUARDED_STAGES = {"ingest", "split", "prepare_images", "image_store", "centrality", "train_graph", "train_clip", "visual_features",
                  "train_mapper", "train_vq", "train_w", "train_diffusion", "train_oracle", "eval_holdout",
                  "train_judges", "eval_guidance"}
GUARD_WORLD = TINY_WORLD


def test_every_non_evaluation_stage_runs_with_truth_out_of_reach_and_the_catalogue_is_the_only_place_written(tmp_path, monkeypatch):
    """Also: with every catalogue path rooted in another folder, the whole pipeline writes nothing where it runs (no
    path default hides in the code)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    guarded = [s for s in pipeline.stage_order(ROOT) if s not in EVALUATION_STAGES | {"synth"}]
    assert set(guarded) == GUARDED_STAGES  # a new stage is guarded here, or named an evaluation stage above
    work, store = tmp_path / "work", tmp_path / "store"
    write_params(work, tiny_params(store=store))
    monkeypatch.chdir(work)
    run_command(stages["synth"]["cmd"])
    truth = store / "data" / "truth" / GUARD_WORLD
    hidden = tmp_path / "elsewhere"
    truth.rename(hidden)  # out of reach: a stage that reads it fails
    opened: list[str] = []
    watching = [True]
    prefix = str(truth) + os.sep

    def hook(event, args):  # string work only: an exception here would fail the open it watches
        if watching[0] and event in {"open", "os.listdir", "os.scandir"} and args and isinstance(args[0], str | bytes | os.PathLike):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path == str(truth) or path.startswith(prefix):
                opened.append(path)

    sys.addaudithook(hook)  # hooks cannot be removed: this one stops recording when the test ends
    try:
        for stage in guarded:
            run_command(stages[stage]["cmd"])
        assert opened == []
        for out in ("03_features/centrality/individuals.parquet", "04_models/graph", "04_models/mapper", "04_models/w",
                    "04_models/diffusion/unet", "04_models/oracle"):
            assert (store / "data" / out).exists(), out
        # The hook does see opens: reading truth on purpose is recorded.
        hidden.rename(truth)
        (truth / "world.json").read_text()
        assert opened == [str(truth / "world.json")]
    finally:
        watching[0] = False
    for stage in pipeline.stage_order(ROOT):
        if stage in EVALUATION_STAGES:
            run_command(stages[stage]["cmd"])
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"]
    assert {p.stem for p in (store / "data" / "metrics").glob("*.json")} == set(stages)
