"""Stage `train_vq` on a small synthetic world's image store: it trains, writes its model, metrics and curve,
or loads a local model."""

import dataclasses
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from prefgen.data import contract as c, split
from prefgen.data.config import IngestConfig, SplitConfig, SynthConfig
from prefgen.data.ingest import run as ingest
from prefgen.data.synth import run as synth
from prefgen.generation import vq
from prefgen.params import load_params
from prefgen.paths import Paths
from prefgen.stages import train_vq
from prefgen.training.config import TrainerConfig, Training
from prefgen.vision.image_store import StoreError, write_image_store
from prefgen.vision.pixels import read_split
from prefgen.vision.prepare import prepare_images
from tests.generation.tiny import VQ

ROOT = Path(__file__).resolve().parents[2]
CPU = TrainerConfig(device="cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    paths = Paths.from_params(load_params(ROOT / "params.yaml")).rooted(tmp_path_factory.mktemp("world"))
    synth(SynthConfig(world="small", n_individuals=200, n_communities=3, n_groups=20, n_images=80, image_size=16),
          paths.raw, paths.truth)
    ingest(IngestConfig(), paths.raw, paths.tables)
    split.run(SplitConfig(), paths.tables, paths.split)
    prepare_images(paths.raw, paths.tables / c.IMAGES_FILE, paths.prepared, VQ.image_size, log=lambda _: None)
    write_image_store(paths.tables, paths.prepared, paths.split, VQ.image_size, paths.images)
    return paths


def stage_paths(world: Paths, out: Path) -> Paths:
    """The world's image store; every output under `out` (no raw image, table or split: the stage reads only the store)."""
    written = Paths.from_params(load_params(ROOT / "params.yaml")).rooted(out)
    return dataclasses.replace(written, images=world.images)


def test_the_stage_trains_on_train_images_and_reports_val_figures(world, tmp_path):
    paths = stage_paths(world, tmp_path)
    result = train_vq.run(Training(VQ, CPU), paths, log=lambda _: None)
    n_train = pl.read_parquet(world.split).filter(pl.col("split") == "train").height
    assert result["train_images"] == n_train and result["epochs"] == VQ.epochs and result["profile"] == "demo"
    assert 0 < result["codebook_usage"] <= 1 and 1 <= result["codebook_perplexity"] <= VQ.num_vq_embeddings
    assert result["val_psnr"] > 5
    curve = pl.read_csv(paths.curve_file("train_vq"))
    assert curve["epoch"].to_list() == list(range(VQ.epochs))
    assert result["val_psnr"] == pytest.approx(curve["val_psnr"][result["kept_epoch"]]) == pytest.approx(curve["val_psnr"].max())
    val_pixels = read_split(world.tables, world.prepared, world.split, "val", VQ.image_size, Counter())[1]  # the store's pixels
    assert vq.evaluate(vq.load_vq(paths.vq), val_pixels)["psnr"] == pytest.approx(result["val_psnr"], abs=1e-5)
    assert vq.load_vq(paths.vq).config.num_vq_embeddings == VQ.num_vq_embeddings
    assert (paths.checkpoint_dir("vq")).is_dir()


def test_a_pretrained_local_model_is_loaded_evaluated_and_saved_not_trained(world, tmp_path):
    paths = stage_paths(world, tmp_path)
    pretrained = tmp_path / "pretrained"
    vq.save_vq(vq.build_vq(VQ), pretrained)
    result = train_vq.run(Training(dataclasses.replace(VQ, pretrained=str(pretrained)), CPU), paths, log=lambda _: None)
    assert result["pretrained"] == str(pretrained) and "epochs" not in result
    assert (paths.vq / "diffusion_pytorch_model.safetensors").read_bytes() == (pretrained / "diffusion_pytorch_model.safetensors").read_bytes()
    assert not paths.checkpoints.exists()
    with pytest.raises(FileNotFoundError, match="no VQModel here"):
        train_vq.run(Training(dataclasses.replace(VQ, pretrained=str(tmp_path / "nowhere")), CPU), paths, log=lambda _: None)


def test_a_store_of_another_size_is_an_error_naming_both_sizes(world, tmp_path):
    paths = stage_paths(world, tmp_path)
    with pytest.raises(StoreError, match=f"{VQ.image_size}-px images; 32 px asked"):
        train_vq.run(Training(dataclasses.replace(VQ, image_size=32), CPU), paths, log=lambda _: None)
    assert not paths.vq.exists()
