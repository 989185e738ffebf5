"""A platform as a new user meets prefgen: `prefgen new` on its logs and photos, the retrain, promote, the night and
the registry commands from inside the folder, all real (DVC, Prefect's temporary server, MLflow's SQLite store)."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, shrink
from tests.tiny_pipeline import TINY_WORLD, run_command, tiny_params, write_params

pytestmark = pytest.mark.slow


def platform_from_a_tiny_world(tmp_path, monkeypatch):
    """A tiny synthetic world's logs and PNGs, laid out as a platform's: logs/ (events, catalogue), photos/ apart."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params(store=tmp_path / "world"))
    run_command("python -m prefgen synth --params params.yaml")
    raw = tmp_path / "world" / "data" / "01_raw" / TINY_WORLD
    logs, photos = tmp_path / "logs", tmp_path / "photos"
    logs.mkdir()
    for log in raw.glob("*.jsonl"):
        shutil.copy(log, logs / log.name)
    shutil.copytree(raw / "images", photos / "images")
    return logs, photos


def micro(folder):
    """The folder's params cut to a few seconds per stage (a user's edit of the generated file)."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    shrink(params, "centrality", threads=1)
    shrink(params, "train_graph", max_epochs=1, influence_folds=2)
    shrink(params, "train_clip", epochs=1, vision_width=32, vision_layers=1, vision_heads=2, threads=1)
    shrink(params, "train_mapper", max_epochs=1)
    shrink(params, "train_w", max_epochs=2)
    shrink(params, "train_vq", block_out_channels=[8, 8, 8], norm_num_groups=4, num_vq_embeddings=32, epochs=1, threads=1)
    shrink(params, "train_diffusion", base_channels=8, norm_num_groups=4, epochs=1, threads=1)
    shrink(params, "sampler", steps=4)
    params["nightly"]["dask"]["n_workers"] = 0
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def prefgen(cwd, *args, timeout=900) -> subprocess.CompletedProcess:
    """The prefgen command as a user runs it; this checkout's prefgen, as the folder's DVC stages import it too."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    done = subprocess.run([sys.executable, "-m", "prefgen", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefgen {args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def test_new_retrain_promote_nightly_and_the_registry_commands_from_inside_the_folder(tmp_path, monkeypatch):
    logs, photos = platform_from_a_tiny_world(tmp_path, monkeypatch)
    folder = tmp_path / "mine"
    prefgen(tmp_path, "new", "mine", "--logs", "logs", "--images", "photos", "--catalog", "logs/images.jsonl")
    micro(folder)

    first = prefgen(tmp_path, "retrain", "mine")
    assert "ran ingest, split" in first.stdout and "train_diffusion, register" in first.stdout
    assert "no gate metric: a bundle becomes champion only by `prefgen promote`" in first.stdout
    assert (folder / "mlruns.db").is_file() and (folder / "data" / "campaign" / "segments.parquet").is_file()
    assert "challenger" in prefgen(folder, "bundles").stdout and "champion" not in prefgen(folder, "bundles").stdout
    prefgen(folder, "promote", "--bundle", "1", "--reason", "the first bundle looked right")

    night = prefgen(tmp_path, "nightly", "mine", "--night", "first")
    assert "from prefgen-bundle/1" in night.stdout and " 0 rejected" in night.stdout
    images = sorted((folder / "data" / "07_nightly" / "default" / "first" / "images").glob("*.png"))
    assert images and (folder / "data" / "07_nightly" / "default" / "first" / "gallery" / "index.html").is_file()
    assert "prefgen-bundle version 1" in prefgen(folder, "lineage", str(images[0])).stdout
    prefgen(folder, "regenerate", str(images[0]))

    again = prefgen(tmp_path, "retrain", "mine")
    assert "ran no stage (all up to date)" in again.stdout and "still version 1" in again.stdout
    assert not [path for path in folder.rglob("*truth*")]
