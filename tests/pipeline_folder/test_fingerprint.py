"""The code fingerprint: new prefgen code reruns exactly the folder's stages whose code changed, and what reads them.

The folder's stages are recorded in dvc.lock by a real `dvc commit` over placeholder outputs (training them is the
slow end-to-end test's work): what is checked is DVC's plan, not the stages' results."""

import shutil
import subprocess
import sys

from prefgen import pipeline
from prefgen.pipeline_folder.create import NewFolder, create, read_record, refresh_code, sha256_text
from tests.conftest import ROOT


def placeholder_outputs(folder):
    """Every output of the folder's stages (and every dep inside one) as a small file, so DVC can record them."""
    params, stages = pipeline._params(folder), pipeline._stages(folder)
    for stage in stages.values():
        for path in pipeline._paths(stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])):
            target = folder / pipeline._interpolate(path, params)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.suffix:
                target.write_text("placeholder")
            else:
                target.mkdir(exist_ok=True)
                (target / "part").write_text("placeholder")
    for stage in stages.values():
        for path in pipeline._paths(stage.get("deps", [])):
            target = folder / pipeline._interpolate(path, params)
            if not target.exists():
                target.write_text("placeholder")


def descendants(folder, stages):
    """The stages a retrain runs after `stages` changed: them and everything downstream of them."""
    upstream, found = pipeline.upstream(folder), set(stages)
    while True:
        more = {name for name, before in upstream.items() if before & found} - found
        if not more:
            return found
        found |= more


def test_changed_code_makes_only_its_stages_and_their_descendants_stale(tmp_path, platform):
    folder = tmp_path / "mine"
    create(NewFolder(folder, platform["logs"], platform["images"], platform["catalog"]))
    placeholder_outputs(folder)
    subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q"], cwd=folder, check=True, capture_output=True)
    assert pipeline.stale_stages(folder) == []
    assert refresh_code(folder) == []  # the same installed prefgen: nothing to rerun

    upgraded = tmp_path / "upgraded"  # a prefgen whose train_w stage changed
    shutil.copytree(ROOT / "prefgen", upgraded / "prefgen", ignore=shutil.ignore_patterns("__pycache__"))
    with open(upgraded / "prefgen" / "stages" / "train_w.py", "a") as module:
        module.write("\n# a new release\n")
    assert refresh_code(folder, upgraded) == ["train_w"]
    assert pipeline.stale_stages(folder) == ["train_w"]
    assert descendants(folder, ["train_w"]) == {"train_w", "train_diffusion", "eval_guidance"}
    assert read_record(folder)["params.yaml"] == sha256_text((folder / "params.yaml").read_text())  # not taken for an edit

    with open(upgraded / "prefgen" / "vision" / "mapper.py", "a") as module:  # shared code: each stage that imports it
        module.write("\n# another release\n")
    changed = refresh_code(folder, upgraded)
    assert changed == ["eval_guidance", "eval_mapper", "train_diffusion", "train_judges", "train_mapper", "train_w"]
    assert pipeline.stale_stages(folder) == changed
