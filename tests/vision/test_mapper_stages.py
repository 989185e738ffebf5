"""The `train_mapper` and `eval_mapper` stages and the ablations on a tiny synthetic world, with stand-in Step 1
vectors and visual features (the real ones need the whole pipeline): what they write and return, through the core."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from prefgen.data import contract as c, split
from prefgen.data.config import IngestConfig, SplitConfig, SynthConfig
from prefgen.data.ingest import run as ingest
from prefgen.data.synth import run as synth
from prefgen.data.tables import scan_parts
from prefgen.eval import mapper as eval_mapper
from prefgen.metrics.ranking import segment_interactions
from prefgen.paths import Paths
from prefgen.stages import eval_mapper as eval_mapper_stage, train_mapper as train_mapper_stage
from prefgen.vision.mapper_data import PARTS
from prefgen.vision.scorer import MAPPER_FILE

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"train_mapper": {"hidden": 16, "batch_size": 64, "max_epochs": 3, "patience": 2}, "trainer": {"device": "cpu"}}


def stand_in_step1_and_features(paths: Paths, dim: int = 4) -> None:
    """Random Step 1 vectors for every segment and train image, random visual parts for every image."""
    rng = np.random.default_rng(0)
    events = scan_parts(paths.tables / c.EVENTS_DIR, c.EVENTS_SCHEMA).collect()
    segments = sorted(set(segment_interactions(events)["segment_id"]))
    splits = pl.read_parquet(paths.split)
    images = sorted(splits["image_id"])
    train = sorted(splits.filter(pl.col("split") == "train")["image_id"])
    paths.graph.mkdir(parents=True)
    pl.DataFrame({"segment_id": segments, "row": range(len(segments))}).write_parquet(paths.graph / "segments.parquet")
    pl.DataFrame({"image_id": train, "row": range(len(train))}).write_parquet(paths.graph / "items.parquet")
    vectors = {"p": torch.randn(len(segments), 2 * dim), "items": torch.randn(len(train), dim), "project": torch.randn(dim, 2 * dim)}
    save_file(vectors, paths.graph / "vectors.safetensors")
    paths.visual.mkdir(parents=True)
    for part in PARTS:
        vectors = rng.normal(size=(len(images), 3)).astype(np.float32)
        pl.DataFrame({"image_id": images, "vector": list(vectors)}).write_parquet(paths.visual / f"{part}.parquet")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Paths:
    paths = Paths.from_params(yaml.safe_load((ROOT / "params.yaml").read_text())).rooted(tmp_path_factory.mktemp("world"))
    synth(SynthConfig(world="mapper", n_individuals=200, n_communities=3, n_groups=20, n_images=80, image_size=16), paths.raw, paths.truth)
    ingest(IngestConfig(), paths.raw, paths.tables)
    split.run(SplitConfig(), paths.tables, paths.split)
    stand_in_step1_and_features(paths)
    return paths


def test_train_mapper_writes_the_mapper_curve_and_checkpoint_and_a_rerun_changes_nothing(world):
    cfg = train_mapper_stage.load_config(PARAMS)
    result = train_mapper_stage.run(cfg, world, log=lambda _: None)
    curve = pl.read_csv(world.curve_file("train_mapper"))
    assert curve["epoch"].to_list() == list(range(result["epochs"])) and {"loss_d", "loss_g", "val_auc"} <= set(curve.columns)
    assert 0 <= result["best_epoch"] < result["epochs"] and result["val_auc"] == curve["val_auc"].max()
    assert (world.checkpoint_dir("mapper") / "checkpoint.safetensors").is_file()
    saved = load_file(world.mapper / MAPPER_FILE)
    assert json.loads((world.mapper / "config.json").read_text())["train_mapper"]["hidden"] == 16
    lines = []
    again = train_mapper_stage.run(cfg, world, log=lines.append)
    assert lines == [f"mapper: resumed after epoch {result['epochs'] - 1} from {world.checkpoint_dir('mapper')}"]
    assert again["best_epoch"] == result["best_epoch"]
    assert all(torch.equal(v, load_file(world.mapper / MAPPER_FILE)[k]) for k, v in saved.items())


def test_eval_mapper_and_the_ablations_train_through_the_trainer_section(world):
    cfg = eval_mapper_stage.load_config(PARAMS)
    if not (world.mapper / MAPPER_FILE).is_file():
        train_mapper_stage.run(train_mapper_stage.load_config(PARAMS), world, log=lambda _: None)
    lines = []
    metrics = eval_mapper_stage.run(cfg, world, log=lines.append)
    assert metrics["dev_segments"] + metrics["test_segments"] == metrics["segments"] and metrics["test_segments"] > 0
    assert {"cold_auc", "vbpr_cold_auc", "random_cold_auc", "oracle_cold_auc", "utility_spearman"} <= set(metrics["test"])
    assert any(line.startswith("vbpr epoch 0/") for line in lines)  # the baseline trains through the core
    rows = eval_mapper.ablations(cfg, world, log=lambda _: None)
    assert [r["variant"] for r in rows] == list(eval_mapper.ABLATIONS)
    assert all(0 <= r["best_epoch"] < PARAMS["train_mapper"]["max_epochs"] for r in rows)
