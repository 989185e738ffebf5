"""Stage `train_clip` on a tiny world's image store: the core's checkpoint and curve in the stage's paths,
0-based best epoch."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from prefgen.data import contract as c, split
from prefgen.data.config import IngestConfig, SplitConfig, SynthConfig
from prefgen.data.ingest import run as ingest
from prefgen.data.synth import run as synth
from prefgen.paths import Paths
from prefgen.stages import train_clip
from prefgen.vision import semantic
from prefgen.vision.image_store import ImageStore, StoreError, write_image_store
from prefgen.vision.prepare import prepare_images

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16
TINY = {"embed_dim": 16, "vision_width": 32, "vision_layers": 1, "vision_heads": 2, "vision_patch": 8,
        "epochs": 2, "patience": 5, "batch_size": 16}


@pytest.fixture
def world(tmp_path) -> tuple[dict, Paths]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train_clip"], params["image_size"] = TINY, SIZE
    params["trainer"] = {"device": "cpu", "mixed_precision": "no", "grad_accum_steps": 1}
    paths = Paths.from_params(params).rooted(tmp_path)
    synth(SynthConfig(world="clip-stage", n_individuals=100, n_communities=2, n_groups=10, n_images=40, image_size=SIZE),
          paths.raw, paths.truth)
    ingest(IngestConfig(), paths.raw, paths.tables)
    split.run(SplitConfig(), paths.tables, paths.split)
    prepare_images(paths.raw, paths.tables / c.IMAGES_FILE, paths.prepared, SIZE, log=lambda _: None)
    write_image_store(paths.tables, paths.prepared, paths.split, SIZE, paths.images)
    return params, paths


def test_the_stage_trains_through_the_core_and_resumes(world):
    params, paths = world
    cfg = train_clip.load_config(params)
    assert cfg.model.epochs == 2 and cfg.trainer.device == "cpu"
    lines: list[str] = []
    result = train_clip.run(cfg, paths, log=lines.append)
    assert set(result) == {"train_images", "val_images", "best_epoch", "epochs", "val_acc", "val_loss", "skipped"}
    store = ImageStore(paths.images)
    assert (result["train_images"], result["val_images"]) == (store.count("train"), store.count("val"))
    curve = pl.read_csv(paths.curve_file("train_clip"))
    assert curve["epoch"].to_list() == [0, 1] and result["epochs"] == 2
    best = result["best_epoch"]
    assert best in (0, 1) and result["val_acc"] == curve["val_acc"][best] and result["val_loss"] == curve["val_loss"][best]
    assert (paths.checkpoint_dir("clip") / "checkpoint.json").is_file()
    model, _ = semantic.load_model(paths.clip)
    assert semantic.embed_images(model, torch.rand(1, 3, 16, 16)).shape == (1, 16)
    lines.clear()
    assert train_clip.run(cfg, paths, log=lines.append) == result  # nothing left to train: the kept epoch again
    assert len(lines) == 1 and lines[0].startswith("clip: resumed after epoch 1")


def test_the_stage_reads_only_the_store_and_refuses_one_of_another_size(world):
    params, paths = world
    for folder in (paths.raw, paths.tables):  # the store holds the pixels and captions the stage trains on
        shutil.rmtree(folder)
    paths.split.unlink()
    cfg = train_clip.load_config(params | {"train_clip": TINY | {"epochs": 1}})
    assert train_clip.run(cfg, paths, log=lambda _: None)["epochs"] == 1
    with pytest.raises(StoreError, match="16-px images; 32 px asked"):
        train_clip.run(train_clip.load_config(params | {"image_size": 32}), paths, log=lambda _: None)
