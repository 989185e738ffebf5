"""The diffusion stage's inputs from the image store: latents encoded once per VQ, streamed in today's order and scale."""

from collections import Counter
from dataclasses import replace

import pytest
import torch

from prefgen.generation import train_diffusion as trainer
from prefgen.generation.data import latent_stores, streamed_data
from prefgen.generation.vq import build_vq
from prefgen.training.config import TrainerConfig
from prefgen.training.data import epoch_loader
from prefgen.vision.image_store import ImageStore, write_image_store
from prefgen.vision.pixels import read_split
from tests.generation.tiny import DIFFUSION, VQ
from tests.vision.test_image_store import SIZE, tiny_world

CPU = TrainerConfig(device="cpu")


@pytest.fixture
def store(tmp_path) -> ImageStore:
    write_image_store(*tiny_world(tmp_path / "world"), SIZE, tmp_path / "images", shard_rows=2)
    return ImageStore(tmp_path / "images", size=SIZE)


@pytest.fixture
def vq():
    return build_vq(replace(VQ, image_size=SIZE)).eval()


def stacked(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def counting(vq, calls: Counter):
    encode = vq.encode

    def counted(pixels):
        calls["batches"] += 1
        return encode(pixels)
    return counted


def test_latents_are_todays_encoded_once_per_vq_with_todays_scale(store, vq, tmp_path):
    calls = Counter()
    vq.encode = counting(vq, calls)
    latents = latent_stores(vq, store, tmp_path / "latents", flip_augment=True, batch_size=2)
    world = tiny_world(tmp_path / "again")  # the store's world: same seed, same images
    (_, pixels, _), (_, val_pixels, _) = (read_split(*world, split, SIZE, Counter()) for split in ("train", "val"))
    with torch.no_grad():  # what the stage encoded before the store: read_split's pixels, whole
        z, flipped = vq.encode(pixels * 2 - 1).latents, vq.encode(pixels.flip(-1) * 2 - 1).latents
        val_z = vq.encode(val_pixels * 2 - 1).latents
    assert torch.allclose(stacked(latents["train"].dataset()), z, atol=1e-6)
    assert torch.allclose(stacked(latents["train-flipped"].dataset()), flipped, atol=1e-6)
    assert torch.allclose(stacked(latents["val"].dataset()), val_z, atol=1e-6)
    data = streamed_data(latents, torch.randn(len(z) + len(val_z), 8), torch.randn(len(z) + len(val_z), 8))
    assert data.scaling_factor == pytest.approx(float(1 / torch.cat([z, flipped]).std()), rel=1e-5)
    encoded = calls["batches"]
    again = latent_stores(vq, store, tmp_path / "latents", flip_augment=False)
    assert calls["batches"] == encoded and set(again) == {"train", "val"}  # read, not encoded again
    assert again["train"].folder == latents["train"].folder
    with torch.no_grad():
        next(vq.parameters()).add_(1.0)
    other = latent_stores(vq, store, tmp_path / "latents", flip_augment=False)
    assert calls["batches"] > encoded and other["train"].folder != latents["train"].folder  # another VQ encodes anew
    assert [f.name for f in (tmp_path / "latents").iterdir() if f.is_dir()] == [other["train"].folder.parent.name]  # only its latents kept


def test_streamed_latents_train_as_todays_stacked_tensors(store, vq, tmp_path):
    """Same batches, conditions and weights as the in-memory data the stage built before (latents scaled up front)."""
    latents = latent_stores(vq, store, tmp_path / "latents", flip_augment=True)
    n, n_val = latents["train"].count, latents["val"].count
    text, pref = torch.randn(n + n_val, 8), torch.randn(n + n_val, 8)
    streamed = streamed_data(latents, text, pref)
    scale = streamed.scaling_factor
    z = torch.cat([stacked(latents["train"].dataset()), stacked(latents["train-flipped"].dataset())])
    before = trainer.tensor_data(z * scale, text[:n].repeat(2, 1), pref[:n].repeat(2, 1),
                                 stacked(latents["val"].dataset()) * scale, text[n:], pref[n:])
    for (z_new, rows), (z_old, old_rows) in zip(epoch_loader(streamed.latents, 4, 0, 1), epoch_loader(before.latents, 4, 0, 1),
                                                strict=True):
        assert torch.equal(z_new * scale, z_old) and torch.equal(streamed.text[rows], before.text[old_rows])
    mirror_rows = [streamed.latents[i][1] for i in range(n, 2 * n)]
    assert len(streamed.latents) == 2 * n and mirror_rows == list(range(n))  # a mirror image reads its image's conditions
    cfg = replace(DIFFUSION, epochs=1, batch_size=4)
    unet, history = trainer.fit(streamed, cfg, CPU, log=lambda _: None)
    old_unet, old_history = trainer.fit(before, cfg, CPU, log=lambda _: None)
    assert trainer.weights_sha256(unet) == trainer.weights_sha256(old_unet)
    assert history.epochs[0]["loss"] == old_history.epochs[0]["loss"]
    assert history.epochs[0]["val_loss"] == old_history.epochs[0]["val_loss"]
    assert streamed_data(latents, text, pref).key == streamed.key != streamed_data(latents, text, pref + 1).key


def test_step_3_learns_from_the_split_images_that_have_visual_features_and_skips_the_rejected(tmp_path):
    """An image the preparation rejected (an unreadable photo) has no visual features: W and the bundle's prototype
    catalogue take the others, as the mapper does, instead of stopping the run."""
    import polars as pl

    from prefgen.generation.data import featured_split_ids

    pl.DataFrame({"image_id": ["a", "b", "c", "d"], "split": ["train", "train", "val", "train"]}).write_parquet(tmp_path / "split.parquet")
    (tmp_path / "visual").mkdir()
    pl.DataFrame({"image_id": ["a", "c", "d"], "vector": [[0.0], [1.0], [2.0]]}).write_parquet(tmp_path / "visual" / "semantic.parquet")
    assert featured_split_ids(tmp_path / "split.parquet", tmp_path / "visual", "train") == ["a", "d"]  # b was rejected
    assert featured_split_ids(tmp_path / "split.parquet", tmp_path / "visual", "val") == ["c"]
