"""No training stage reads a `cold` image or an interaction with one (they stand in for new images)."""

import sys
from pathlib import Path

import polars as pl
import yaml

from prefgen.data import contract as c, split
from prefgen.data.config import IngestConfig, SplitConfig, SynthConfig
from prefgen.data.ingest import run as ingest
from prefgen.data.synth import run as synth
from prefgen.paths import Paths
from prefgen.vision.image_store import ImageStore, write_image_store
from prefgen.vision.mapper_data import split_interactions
from prefgen.vision.prepare import prepare_images

ROOT = Path(__file__).resolve().parents[2]


def test_clip_training_and_mapper_pairs_never_touch_cold_images(tmp_path):
    paths = Paths.from_params(yaml.safe_load((ROOT / "params.yaml").read_text())).rooted(tmp_path)
    synth(SynthConfig(world="cold", n_individuals=200, n_communities=3, n_groups=20, n_images=80, image_size=16), paths.raw, paths.truth)
    ingest(IngestConfig(), paths.raw, paths.tables)
    split.run(SplitConfig(), paths.tables, paths.split)
    prepare_images(paths.raw, paths.tables / c.IMAGES_FILE, paths.prepared, 16, log=lambda _: None)  # every image, cold too
    by_file = {Path(p).stem: i for i, p in pl.read_parquet(paths.prepared / "manifest.parquet").select("image_id", "prepared").iter_rows()}
    splits = pl.read_parquet(paths.split)
    cold = set(splits.filter(pl.col("split") == "cold")["image_id"])
    assert cold
    opened: list[str] = []

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], str | Path):
            opened.append(by_file.get(Path(args[0]).stem, Path(args[0]).stem))

    sys.addaudithook(hook)  # hooks cannot be removed; this one only records
    write_image_store(paths.tables, paths.prepared, paths.split, 16, tmp_path / "store")  # what CLIP, the VQ and the UNet read
    store = ImageStore(tmp_path / "store")
    assert store.count("train") + store.count("val") == 80 - len(cold)
    assert not set(opened) & cold and set(opened) & set(splits.filter(pl.col("split") == "train")["image_id"])  # the hook sees opens
    for name in ("train", "val"):
        pairs = split_interactions(paths.tables, paths.split, name)
        assert pairs.height and set(pairs["image_id"]) <= set(splits.filter(pl.col("split") == name)["image_id"])
