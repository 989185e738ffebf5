"""No training stage of Step 2 reads a `cold` image or an interaction with one (they stand in for new images)."""

import sys
from collections import Counter
from pathlib import Path

import polars as pl

from prefgen.config import IngestConfig, SplitConfig, SynthConfig, TrainClipConfig, TrainMapperConfig
from prefgen.data import split
from prefgen.data.ingest import run as ingest
from prefgen.data.synth import run as synth
from prefgen.stages.train_clip import split_images
from prefgen.vision.mapper_data import _interactions


def test_clip_training_and_mapper_pairs_never_touch_cold_images(tmp_path):
    synth(SynthConfig(world="cold", n_individuals=200, n_communities=3, n_groups=20, n_images=80, image_size=16),
          tmp_path / "raw", tmp_path / "truth")
    ingest(IngestConfig(), tmp_path / "raw" / "cold", tmp_path / "tables")
    split.run(SplitConfig(), tmp_path / "tables", tmp_path / "split.parquet")
    splits = pl.read_parquet(tmp_path / "split.parquet")
    cold = set(splits.filter(pl.col("split") == "cold")["image_id"])
    assert cold
    opened: list[str] = []

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], str | Path):
            opened.append(Path(args[0]).stem)

    sys.addaudithook(hook)  # hooks cannot be removed; this one only records
    cfg = TrainClipConfig(image_size=16, tables_dir=str(tmp_path / "tables"), images_dir=str(tmp_path / "raw" / "cold"),
                          split=str(tmp_path / "split.parquet"))
    train_pixels, _ = split_images(cfg, "train", Counter())
    val_pixels, _ = split_images(cfg, "val", Counter())
    assert len(train_pixels) + len(val_pixels) == 80 - len(cold)
    assert not set(opened) & cold and set(opened) & set(splits.filter(pl.col("split") == "train")["image_id"])  # the hook sees opens
    mapper_cfg = TrainMapperConfig(tables_dir=str(tmp_path / "tables"), split=str(tmp_path / "split.parquet"))
    for name in ("train", "val"):
        pairs = _interactions(mapper_cfg, name)
        assert pairs.height and set(pairs["image_id"]) <= set(splits.filter(pl.col("split") == name)["image_id"])
