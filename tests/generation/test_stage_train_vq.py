"""Stage `train_vq` on a small synthetic world: it trains, writes its model, metrics and curve, or loads a local model."""

import dataclasses

import polars as pl
import pytest

from prefgen.config import IngestConfig, SplitConfig, SynthConfig
from prefgen.data import split
from prefgen.data.ingest import run as ingest
from prefgen.data.synth import run as synth
from prefgen.generation import vq
from prefgen.stages import train_vq
from tests.generation.tiny import VQ


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    synth(SynthConfig(world="small", n_individuals=200, n_communities=3, n_groups=20, n_images=80, image_size=16),
          root / "raw", root / "truth")
    ingest(IngestConfig(), root / "raw" / "small", root / "tables")
    split.run(SplitConfig(), root / "tables", root / "split.parquet")
    return root


def stage_cfg(world, out, **changes):
    return dataclasses.replace(VQ, tables_dir=str(world / "tables"), images_dir=str(world / "raw" / "small"), split=str(world / "split.parquet"),
                               out_dir=str(out / "vq"), checkpoint_dir=str(out / "ckpt"), metrics=str(out / "m.json"),
                               curve=str(out / "curve.csv"), **changes)


def test_the_stage_trains_on_train_images_and_reports_val_figures(world, tmp_path):
    cfg = stage_cfg(world, tmp_path)
    result = train_vq.train(cfg, log=lambda _: None)
    n_train = pl.read_parquet(world / "split.parquet").filter(pl.col("split") == "train").height
    assert result["train_images"] == n_train and result["epochs"] == VQ.epochs and result["profile"] == "demo"
    assert 0 < result["codebook_usage"] <= 1 and 1 <= result["codebook_perplexity"] <= VQ.num_vq_embeddings
    assert result["val_psnr"] > 5
    assert pl.read_csv(cfg.curve)["epoch"].to_list() == list(range(VQ.epochs))
    assert vq.load_vq(tmp_path / "vq").config.num_vq_embeddings == VQ.num_vq_embeddings


def test_a_pretrained_local_model_is_loaded_evaluated_and_saved_not_trained(world, tmp_path):
    pretrained = tmp_path / "pretrained"
    vq.save_vq(vq.build_vq(VQ), pretrained)
    result = train_vq.train(stage_cfg(world, tmp_path, pretrained=str(pretrained)), log=lambda _: None)
    assert result["pretrained"] == str(pretrained) and "epochs" not in result
    assert (tmp_path / "vq" / "diffusion_pytorch_model.safetensors").read_bytes() == (pretrained / "diffusion_pytorch_model.safetensors").read_bytes()
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(FileNotFoundError, match="no VQModel here"):
        train_vq.train(stage_cfg(world, tmp_path, pretrained=str(tmp_path / "nowhere")), log=lambda _: None)
