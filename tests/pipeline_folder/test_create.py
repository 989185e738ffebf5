"""`prefgen new`: a new folder only, the data checked first, and --update rewriting only unedited generated files."""

import json
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from prefgen.cli import app
from prefgen.pipeline_folder.create import RECORD, NewFolder, create, update
from prefgen.pipeline_folder.stages import FolderError
from tests.conftest import write_jsonl
from tests.pipeline_folder.conftest import write_platform


def new_args(folder, platform, *extra):
    return ["new", str(folder), "--logs", str(platform["logs"]), "--images", str(platform["images"]),
            "--catalog", str(platform["catalog"]), *extra]


def test_new_writes_a_committed_git_and_dvc_repository_with_a_campaign_from_the_captions(tmp_path, platform):
    folder = tmp_path / "mine"
    done = CliRunner().invoke(app, new_args(folder, platform))
    assert done.exit_code == 0, done.output
    assert (folder / ".dvc" / "config").is_file() and (folder / ".git").is_dir()
    assert subprocess.run(["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True).stdout == ""
    campaign = yaml.safe_load((folder / "campaigns" / "default.yaml").read_text())
    assert campaign["prompts"] == ["a red boat", "a dog"]  # the two most frequent captions, empty ones left out
    assert campaign["segments"] == {"table": "data/campaign/segments.parquet"}
    deployments = {d["name"]: d["entrypoint"] for d in yaml.safe_load((folder / "prefect.yaml").read_text())["deployments"]}
    assert deployments == {"nightly": "flows.nightly.nightly", "weekly-retrain": "flows.folder.retrain_folder"}
    assert sorted(json.loads((folder / RECORD).read_text())["files"]) == [
        ".dvcignore", ".gitignore", "campaigns/default.yaml", "dvc.yaml", "params.yaml", "prefect.yaml"]


def test_an_existing_folder_is_refused_without_update(tmp_path, platform):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    done = CliRunner().invoke(app, new_args(folder, platform))
    assert done.exit_code == 2
    assert "exists: give a new folder, or --update" in done.output
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    with pytest.raises(FolderError, match="not made by prefgen new"):
        update(NewFolder(folder, platform["logs"], platform["images"], platform["catalog"]))


@pytest.mark.parametrize(("change", "message"), [
    ("outside", "is outside --logs .*: move the catalogue into the logs folder: ingest reads it from there"),
    ("name", "ingest reads image catalogues named images\\*.jsonl\\(.gz\\) only"),
    ("inside", "is inside --logs .*: ingest would read the folder's own files"),
    ("profile", "--profile 'huge': give one of demo, quality"),
])
def test_data_the_pipeline_could_not_read_is_refused_in_one_line(tmp_path, platform, change, message):
    spec = {"folder": tmp_path / "mine", "logs": platform["logs"], "images": platform["images"], "catalog": platform["catalog"],
            "profile": "demo"}
    if change == "outside":
        spec["catalog"] = write_jsonl(tmp_path / "elsewhere" / "images.jsonl", [{"image_id": "a", "path": "pics/p0.png"}])
    elif change == "name":
        spec["catalog"] = write_jsonl(platform["logs"] / "catalogue.jsonl", [{"image_id": "a", "path": "pics/p0.png"}])
    elif change == "inside":
        spec["folder"] = platform["logs"] / "mine"
    else:
        spec["profile"] = "huge"
    with pytest.raises(FolderError, match=message):
        create(NewFolder(**spec))
    assert not spec["folder"].exists()


def test_update_rewrites_only_unedited_generated_files_and_keeps_an_edited_one(tmp_path):
    platform = write_platform(tmp_path / "platform")
    folder = tmp_path / "mine"
    spec = NewFolder(folder, platform["logs"], platform["images"], platform["catalog"])
    create(spec)
    assert update(spec) == ([], [])  # nothing changed: nothing rewritten, no commit
    (folder / "notes.txt").write_text("the user's own file")
    (folder / "dvc.yaml").unlink()
    write_jsonl(platform["catalog"], [{"image_id": f"n{i}", "path": "pics/p0.png", "caption": "a green tram"} for i in range(3)])
    assert update(spec) == (["campaigns/default.yaml", "dvc.yaml"], [])  # the new captions, the missing file
    assert yaml.safe_load((folder / "campaigns" / "default.yaml").read_text())["prompts"] == ["a green tram"]
    assert (folder / "notes.txt").read_text() == "the user's own file"

    params = (folder / "params.yaml").read_text()
    (folder / "params.yaml").write_text(params.replace("profile: demo", "profile: quality"))
    write_jsonl(platform["catalog"], [{"image_id": "n9", "path": "pics/p0.png", "caption": "a blue bus"}])
    assert update(spec) == (["campaigns/default.yaml"], ["params.yaml"])  # the edit kept, the campaign still updated
    assert "profile: quality" in (folder / "params.yaml").read_text()
    assert (folder / "params.yaml.prefgen-new").read_text() == params  # prefgen's version beside it, to merge by hand
    assert yaml.safe_load((folder / "campaigns" / "default.yaml").read_text())["prompts"] == ["a blue bus"]
    assert update(spec) == ([], ["params.yaml"])
    (folder / "params.yaml").write_text(params)  # the user takes prefgen's version: it is prefgen's again
    assert update(spec) == ([], [])


def test_a_folder_whose_repository_cannot_be_made_is_removed(tmp_path, platform, monkeypatch):
    folder = tmp_path / "mine"
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no git
    with pytest.raises(FolderError, match="git not found on PATH"):
        create(NewFolder(folder, platform["logs"], platform["images"], platform["catalog"]))
    assert not folder.exists()


def test_the_folders_deployments_resolve_their_flows_from_inside_it(tmp_path, platform, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    folder = tmp_path / "mine"
    create(NewFolder(folder, platform["logs"], platform["images"], platform["catalog"]))
    monkeypatch.chdir(folder)  # where `prefect deploy --all` runs, and where a worker runs the flows
    deployments = yaml.safe_load((folder / "prefect.yaml").read_text())["deployments"]
    flows = {d["name"]: load_flow_from_entrypoint(d["entrypoint"], use_placeholder_flow=False).name for d in deployments}
    assert flows == {"nightly": "nightly", "weekly-retrain": "retrain-folder"}
    assert all(d["parameters"] == {"root": "."} for d in deployments)
