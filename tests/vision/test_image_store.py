"""The image store: the prepared images' pixels (read_split's) as uint8 shards, streamed through a DataLoader, and clear
errors for a bad store."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from prefgen.data import contract as c
from prefgen.training.data import epoch_loader
from prefgen.vision import image_store as store_module
from prefgen.vision.image_store import (
    DIGESTED,
    INDEX,
    MANIFEST,
    SHARDS,
    ImageStore,
    StoreError,
    index_digest,
    manifest_digest,
    write_image_store,
)
from prefgen.vision.latent_store import LatentStore, encode_latents, pooled_std, weights_digest
from prefgen.vision.pixels import file_sha256, read_split
from prefgen.vision.prepare import prepare_images

SIZE = 8


def tiny_world(root: Path, n_good: int = 9, seed: int = 0) -> tuple[Path, Path, Path]:
    """(tables, prepared folder, split file) of a few random PNGs, a grey one, photos of other sizes, and one image of
    every failure `read_split` counts, prepared at SIZE; the raw files are under root / "raw"."""
    rng = np.random.default_rng(seed)
    tables, raw = root / "tables", root / "raw"
    (raw / "images").mkdir(parents=True), tables.mkdir()
    rows, splits = [], []

    def add(image_id: str, split: str, path: str, pixels: np.ndarray | bytes | None) -> None:
        if isinstance(pixels, np.ndarray):
            Image.fromarray(pixels).save(raw / path)
        elif isinstance(pixels, bytes):
            (raw / path).write_bytes(pixels)
        rows.append({"image_id": image_id, "path": path, "caption": f"caption of {image_id}", "owner_id": None,
                     "source": "test", "line": len(rows)})
        splits.append({"image_id": image_id, "split": split})

    for k in range(n_good):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        add(f"img{k:02d}", "train" if k % 3 else "val", f"images/img{k:02d}.png", pixels)
    add("grey", "train", "images/grey.png", rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
    add("missing", "train", "images/missing.png", None)
    add("broken", "train", "images/broken.png", b"not a png")
    add("oblong", "val", "images/oblong.png", rng.integers(0, 256, (SIZE * 2, SIZE, 3), dtype=np.uint8))
    add("small", "val", "images/small.png", rng.integers(0, 256, (SIZE // 2, SIZE // 2, 3), dtype=np.uint8))
    add("large", "val", "images/large.png", rng.integers(0, 256, (SIZE * 2, SIZE * 2, 3), dtype=np.uint8))
    add("no_path", "train", "", None)
    add("cold", "cold", "images/cold.png", b"a cold image has no prepared file; a training store never asks")
    pl.DataFrame(rows, schema={"image_id": pl.String, "path": pl.String, "caption": pl.String, "owner_id": pl.String,
                               "source": pl.String, "line": pl.Int64}).write_parquet(tables / c.IMAGES_FILE)
    pl.DataFrame(splits).write_parquet(root / "split.parquet")
    prepare_images(raw, tables / c.IMAGES_FILE, root / "prepared", SIZE, log=lambda _: None)
    return tables, root / "prepared", root / "split.parquet"


@pytest.fixture
def world(tmp_path) -> tuple[Path, Path, Path]:
    return tiny_world(tmp_path / "world")


def written(world: tuple[Path, Path, Path], out: Path, **kwargs) -> ImageStore:
    write_image_store(*world, SIZE, out, **kwargs)
    return ImageStore(out, size=SIZE)


def stacked(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_store_holds_read_splits_pixels_ids_captions_and_skipped_counts(world, tmp_path):
    store = written(world, tmp_path / "store")
    expected_skips: Counter = Counter()
    for split in ("train", "val"):
        ids, pixels, captions = read_split(*world, split, SIZE, expected_skips)
        assert store.ids(split) == ids and store.captions(split) == captions
        images = stacked(store.dataset(split))
        assert images.dtype == torch.uint8 and torch.equal(images.float() / 255, pixels)
    assert store.manifest["skipped"] == dict(expected_skips) == {"train.missing_file": 1, "train.not_an_image": 1}
    index = store.index("train")
    raw = world[0].parent / "raw"
    assert index["sha256"].to_list() == [file_sha256(raw / "images" / f"{i}.png") for i in index["image_id"]]  # the source's


def test_the_store_holds_the_prepared_images_of_every_size_and_refuses_a_folder_prepared_at_another(world, tmp_path):
    store = written(world, tmp_path / "store")
    ids, images = store.ids("val"), stacked(store.dataset("val"))
    assert {"oblong", "small", "large"} <= set(ids)  # cropped, scaled up, scaled down by the preparation
    prepared = pl.read_parquet(world[1] / "manifest.parquet").filter(pl.col("image_id") == "large")["prepared"][0]
    assert np.array_equal(images[ids.index("large")].numpy(), np.asarray(Image.open(world[1] / prepared)).transpose(2, 0, 1))
    other = tmp_path / "at16"
    prepare_images(world[0].parent / "raw", world[0] / c.IMAGES_FILE, other, SIZE * 2, log=lambda _: None)
    assert write_image_store(world[0], other, world[2], SIZE, tmp_path / "wrong")["skipped"] == {
        "train.missing_file": 1, "train.not_an_image": 1, "train.wrong_size": 7, "val.wrong_size": 6}
    with pytest.raises(FileNotFoundError, match="no prepared images in .*nowhere.*run the prepare_images stage"):
        write_image_store(world[0], tmp_path / "nowhere", world[2], SIZE, tmp_path / "none")


def test_a_training_store_never_holds_a_cold_image_and_a_store_asked_for_cold_does(world, tmp_path):
    store = written(world, tmp_path / "store")
    assert store.splits == ["train", "val"] and "cold" not in store.manifest["counts"]
    assert not any(key.startswith("cold.") for key in store.manifest["skipped"])
    with pytest.raises(StoreError, match="no 'cold' split here"):
        store.dataset("cold")
    write_image_store(*world, SIZE, tmp_path / "cold", splits=("cold",))
    assert ImageStore(tmp_path / "cold", SIZE).manifest["skipped"] == {"cold.not_an_image": 1}


def test_rows_sit_in_fixed_size_shards_that_numpy_can_memory_map(world, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "INDEX_BATCH", 3)  # the index is checked in chunks that split shards and splits
    store = written(world, tmp_path / "store", shard_rows=2)
    shards = sorted((tmp_path / "store" / SHARDS).glob("train-*.npy"))
    assert [len(np.load(p, mmap_mode="r")) for p in shards] == [2, 2, 2, 1]  # 7 readable train images
    mapped = np.concatenate([np.load(p, mmap_mode="r") for p in shards])
    assert torch.equal(torch.from_numpy(mapped), stacked(store.dataset("train")))
    index = store.index("train")
    assert index["shard"].to_list() == [0, 0, 1, 1, 2, 2, 3] and index["row"].to_list() == [0, 1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("workers", [0, 1])
def test_epoch_loader_streams_every_image_once_in_an_order_set_by_seed_and_epoch(world, tmp_path, workers):
    dataset = written(world, tmp_path / "store", shard_rows=3).dataset("train")

    def epoch(seed: int, number: int) -> tuple[list[int], torch.Tensor]:
        batches = list(epoch_loader(dataset, batch_size=3, seed=seed, epoch=number, workers=workers))
        return torch.cat([rows for _, rows in batches]).tolist(), torch.cat([images for images, _ in batches])

    rows, images = epoch(seed=1, number=0)
    assert sorted(rows) == list(range(len(dataset))) and rows != sorted(rows)
    assert torch.equal(images, stacked(dataset)[rows])
    assert epoch(seed=1, number=0)[0] == rows and epoch(seed=1, number=1)[0] != rows


def test_a_failed_write_leaves_the_previous_store_whole(world, tmp_path, monkeypatch):
    before = written(world, tmp_path / "store")
    calls = Counter()

    def failing(path, size):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # a kill mid-write
        return read(path, size)

    read = store_module.read_pixels
    monkeypatch.setattr(store_module, "read_pixels", failing)
    with pytest.raises(KeyboardInterrupt):
        write_image_store(*world, SIZE, tmp_path / "store")
    after = ImageStore(tmp_path / "store", SIZE)
    assert after.digest == before.digest and torch.equal(stacked(after.dataset("val")), stacked(before.dataset("val")))


def _rewrite_index(folder: Path, edit) -> None:
    """Edit the index and re-sign index and manifest, so only the layout check can catch the edit."""
    index = edit(pl.read_parquet(folder / INDEX))
    index.write_parquet(folder / INDEX)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["index_digest"] = index_digest([index])
    manifest["digest"] = manifest_digest(manifest, DIGESTED)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _truncate_first_shard(folder: Path) -> None:
    shard = sorted((folder / SHARDS).glob("train-*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[:-5])


BREAKAGES = {
    "no manifest": (lambda f: (f / MANIFEST).unlink(), "no image store here"),
    "corrupt manifest": (lambda f: (f / MANIFEST).write_text("{"), "corrupt manifest"),
    "edited manifest": (lambda f: (f / MANIFEST).write_text((f / MANIFEST).read_text().replace('"size": 8', '"size": 9')),
                        "does not match its digest"),
    "no index": (lambda f: (f / INDEX).unlink(), "missing or unreadable index"),
    "edited index": (lambda f: pl.read_parquet(f / INDEX).with_columns(pl.col("caption") + "!").write_parquet(f / INDEX),
                     "differs from the manifest's index digest"),
    "index past a shard": (lambda f: _rewrite_index(f, lambda i: i.with_columns(pl.col("row") + 1)), "do not match the shards"),
    "missing shard": (lambda f: sorted((f / SHARDS).glob("val-*.npy"))[0].unlink(), "shard missing"),
    "truncated shard": (_truncate_first_shard, "not the 2 rows its header promises"),
    "foreign shard": (lambda f: np.save(sorted((f / SHARDS).glob("train-*.npy"))[0], np.zeros((2, 3, 4, 4), np.uint8)),
                      r"holds uint8 \(2, 3, 4, 4\)"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_store_is_an_error_naming_what_is_wrong(world, tmp_path, breakage):
    written(world, tmp_path / "store", shard_rows=2)
    damage, message = BREAKAGES[breakage]
    damage(tmp_path / "store")
    with pytest.raises(StoreError, match=message):
        ImageStore(tmp_path / "store", SIZE)


def test_a_store_of_another_size_or_split_is_an_error(world, tmp_path):
    written(world, tmp_path / "store")
    with pytest.raises(StoreError, match="holds 8-px images; 16 px asked"):
        ImageStore(tmp_path / "store", size=16)
    with pytest.raises(StoreError, match="no image store here"):
        ImageStore(tmp_path / "nowhere")


def test_verify_finds_changed_pixels_that_opening_does_not_read(world, tmp_path):
    store = written(world, tmp_path / "store")
    store.verify()
    shard = sorted((tmp_path / "store" / SHARDS).glob("val-*.npy"))[0]
    pixels = np.load(shard)
    pixels[0, 0, 0, 0] ^= 1
    np.save(shard, pixels)
    with pytest.raises(StoreError, match="pixels differ"):
        ImageStore(tmp_path / "store", SIZE).verify()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    write_image_store(*tiny_world(root / "world"), SIZE, root / "store", shard_rows=3)
    return root / "store"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_flipped_byte_anywhere_is_a_store_error_or_changes_nothing(pristine, data):
    """Whatever byte of whatever file flips: opening or verifying raises StoreError, or the store reads as before."""
    expected = ImageStore(pristine, SIZE)
    files = sorted(p.relative_to(pristine) for p in pristine.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "store"
        shutil.copytree(pristine, copy)
        target = copy / data.draw(st.one_of(st.just(Path(INDEX)), st.sampled_from(files)))  # the index most often
        content = bytearray(target.read_bytes())
        content[data.draw(st.integers(0, len(content) - 1))] ^= data.draw(st.integers(1, 255))
        target.write_bytes(bytes(content))
        try:
            store = ImageStore(copy, SIZE)
            store.verify()
        except StoreError:
            return
        for split in expected.splits:
            assert store.ids(split) == expected.ids(split) and store.digest == expected.digest
            assert torch.equal(stacked(store.dataset(split)), stacked(expected.dataset(split)))


def test_latents_are_encoded_once_per_vq_in_row_order(world, tmp_path):
    images = written(world, tmp_path / "store", shard_rows=4).dataset("train")
    torch.manual_seed(0)
    vq, other = torch.nn.Conv2d(3, 2, 2, stride=2), torch.nn.Conv2d(3, 2, 2, stride=2)
    calls = Counter()

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        calls["batches"] += 1
        return vq(pixels * 2 - 1)

    latents = encode_latents(images, encode, tmp_path / "latents", weights_digest(vq), "train", batch_size=3, shard_rows=2)
    with torch.no_grad():
        expected = vq(stacked(images).float() / 255 * 2 - 1)
    assert calls["batches"] == 3 and torch.allclose(stacked(latents.dataset()), expected, atol=1e-6)
    assert latents.std == pytest.approx(float(expected.std()), rel=1e-5)
    again = encode_latents(images, encode, tmp_path / "latents", weights_digest(vq), "train")
    assert calls["batches"] == 3 and again.folder == latents.folder  # read, not encoded again
    assert weights_digest(other) != weights_digest(vq)
    with pytest.raises(StoreError, match="encode them again"):
        LatentStore(latents.folder, key=weights_digest(other))
    mirrored = lambda pixels: encode(pixels.flip(-1))  # noqa: E731
    flipped = encode_latents(images, mirrored, tmp_path / "latents", weights_digest(vq), "train-flipped")
    both = torch.cat([stacked(latents.dataset()), stacked(flipped.dataset())])
    assert pooled_std(latents, flipped) == pytest.approx(float(both.std()), rel=1e-5)  # the diffusion trainer's scale
