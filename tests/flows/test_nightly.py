"""The nightly flow for real: Prefect (temporary server), MLflow, the champion bundle of a real retrain, a real 2-worker
Dask LocalCluster, and a kill -9 in the middle of a night followed by a rerun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import polars as pl
import pytest
import yaml
from distributed import LocalCluster
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from flows.nightly import markdown_text, nightly
from prefgen import tracking
from prefgen.cli import app
from prefgen.config import tracking_config
from prefgen.params import ConfigError, load_params

pytestmark = pytest.mark.slow

HOSTILE = "a star <script>window.__pwned=1</script>"


def set_nightly(project: Path, n_workers: int, address: str = "") -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["nightly"]["dask"] |= {"n_workers": n_workers, "address": address}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def write_campaign(project: Path, name: str, segments: list[str], prompts: list[str], n: int) -> str:
    path = project / "campaigns" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "segments": {"ids": segments}, "prompts": prompts, "images_per_prompt": n}))
    return str(path.relative_to(project))


def known_segments(project: Path, k: int) -> list[str]:
    table = pl.read_parquet(project / "data" / "04_models" / "graph" / "segments.parquet")
    return table.filter(pl.col("kind") == "group")["segment_id"].head(k).to_list() + table.filter(pl.col("kind") == "individual")["segment_id"].head(1).to_list()


# Beside the trained project's tests under xdist: this module's Prefect server is already up on that worker.
@pytest.mark.xdist_group("trained_project")
def test_a_night_that_would_leave_the_campaign_folder_is_refused_before_anything_is_read(tmp_path):
    with pytest.raises(ConfigError, match=r"^night '\.\./\.\./outside': give a date \(YYYY-MM-DD\) or a slug"):
        nightly(str(tmp_path), None, "../../outside")  # no params.yaml here: the night is checked first
    assert list(tmp_path.iterdir()) == []


@pytest.mark.xdist_group("trained_project")
def test_the_gallery_artifact_shows_ids_as_text_never_as_markdown_or_html():
    hostile = "grp:a|b <img src=x onerror=alert(1)> [x](javascript:1) `c` *d*\n# e"
    assert markdown_text(hostile) == (r"grp:a\|b &lt;img src=x onerror=alert\(1\)&gt; \[x\]\(javascript:1\) \`c\` \*d\* \# e")
    assert markdown_text("data/07_nightly/t1/single/gallery/index.html") == r"data/07\_nightly/t1/single/gallery/index\.html"


def test_nightly_makes_image_sets_reports_what_it_refused_and_is_the_same_on_dask(trained_project, monkeypatch):
    project, _ = trained_project
    segments = known_segments(project, 1)
    spec = write_campaign(project, "t1", segments + ["../escape", "grp:missing"], [HOSTILE, "   ", "a circle"], 2)
    set_nightly(project, n_workers=0)
    night = nightly(str(project), spec, "single")

    assert (night["units"], night["units_made"], night["images"], night["bundle"]) == (4, 4, 8, "prefgen-bundle/1")
    assert sorted((r["what"], r["value"]) for r in night["rejected"]) == [("prompt", "   "), ("segment", "../escape"), ("segment", "grp:missing")]
    night_dir = Path(night["out_dir"])
    manifest = pl.read_parquet(night["manifest"])
    assert manifest.height == 8 and set(manifest["segment"]) == set(segments)
    assert set(manifest["prompt"]) == {HOSTILE, "a circle"} and manifest["seed"].to_list() == [0, 1] * 4
    assert all((night_dir / f).is_file() for f in manifest["file"])
    paths = [p.relative_to(night_dir).as_posix() for p in night_dir.rglob("*")]
    assert not [p for p in paths if any(s in p for s in segments + ["escape", "script"])]  # no id or prompt in a path
    assert not [p for p in paths if p.endswith(".tmp")]

    tracking.configure(tracking_config(load_params(project / "params.yaml")), project)
    run = mlflow.get_run(night["run_id"])
    assert (run.data.tags["prefgen.stage"], run.data.tags["bundle.version"], run.data.metrics["rejected"]) == ("nightly", "1", 3.0)
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(night["run_id"])} | {
        a.path for a in mlflow.MlflowClient().list_artifacts(night["run_id"], "gallery")}
    assert {"manifest", "rejected.json", "gallery", "gallery/index.html", "gallery/segments"} <= logged
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["nightly-gallery"])))
    # The module's server holds other tests' nights too (random order): this night's gallery path is its own.
    assert any(markdown_text(night["gallery"]) in artifact.data for artifact in artifacts)

    monkeypatch.chdir(project)  # an image of the night traces back by its sha256 alone, through the run's manifest
    traced = CliRunner().invoke(app, ["lineage", manifest["image_sha256"][0][:16], "--json"])
    assert traced.exit_code == 0, traced.output
    assert json.loads(traced.stdout)["image"]["manifest"].startswith(f"runs:/{night['run_id']}/")

    again = nightly(str(project), spec, "single")  # the same night again: nothing to make
    assert (again["units_made"], again["units_skipped"], again["images"]) == (0, 4, 8)

    set_nightly(project, n_workers=2)  # a real LocalCluster of two worker processes
    on_dask = nightly(str(project), spec, "dask")
    assert on_dask["units_made"] == 4
    assert pl.read_parquet(on_dask["manifest"])["image_sha256"].to_list() == manifest["image_sha256"].to_list()

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        set_nightly(project, n_workers=2, address=cluster.scheduler_address)  # a running scheduler, as on a real cluster
        try:
            remote = nightly(str(project), spec, "address")
        finally:
            set_nightly(project, n_workers=0)  # the session's project must not keep a scheduler that is about to close
        assert cluster.scheduler.transition_counter > 0  # the work went through that scheduler, not a new LocalCluster
    assert pl.read_parquet(remote["manifest"])["image_sha256"].to_list() == manifest["image_sha256"].to_list()


def visible_files_are_whole(night_dir: Path) -> None:
    """Every file a reader can see is complete: PNGs decode, unit parts read."""
    for png in (night_dir / "images").glob("*.png") if (night_dir / "images").is_dir() else []:
        with Image.open(png) as image:
            image.load()
    for part in (night_dir / "units").glob("*.parquet") if (night_dir / "units").is_dir() else []:
        pl.read_parquet(part)


def test_a_night_killed_with_sigkill_resumes_making_only_what_is_missing(trained_project):
    project, _ = trained_project
    spec = write_campaign(project, "killed", known_segments(project, 5), ["a star", "a circle", "a square"], 3)
    set_nightly(project, n_workers=0)
    night_dir = project / "data" / "07_nightly" / "killed" / "n1"
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())  # the test's Prefect server
    proc = subprocess.Popen([sys.executable, "-m", "flows.nightly", str(project), "--campaign", spec, "--night", "n1"],
                            cwd=Path(__file__).resolve().parents[2], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((night_dir / "units").glob("*.parquet")) if (night_dir / "units").is_dir() else True:
        assert proc.poll() is None and time.time() < deadline, "the night ended before its first unit was done"
        visible_files_are_whole(night_dir)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    visible_files_are_whole(night_dir)
    done_before = {p.name: p.stat().st_mtime_ns for p in (night_dir / "units").glob("*.parquet")}
    images_before = {p.name: p.stat().st_mtime_ns for p in (night_dir / "images").glob("*.png")}
    assert 0 < len(done_before) < 18 and not (night_dir / "manifest.parquet").exists()

    resumed = nightly(str(project), spec, "n1")
    assert (resumed["units_skipped"], resumed["units_made"]) == (len(done_before), 18 - len(done_before))
    assert resumed["images_made"] == 3 * resumed["units_made"] and resumed["images"] == 54
    assert {p: (night_dir / "units" / p).stat().st_mtime_ns for p in done_before} == done_before  # done units untouched
    unit_images = pl.read_parquet(night_dir / "manifest.parquet").filter(pl.col("unit").is_in([p[:-8] for p in done_before]))
    assert all(images_before[Path(f).name] == (night_dir / f).stat().st_mtime_ns for f in unit_images["file"])
    assert not list(night_dir.rglob("*.tmp"))
