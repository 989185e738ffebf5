"""Stage visual_features (incremental, bad images counted) and the PreferenceScorer (gradients, clear errors)."""

import json
from dataclasses import asdict

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from prefgen.data import contract as c
from prefgen.vision import features, semantic
from prefgen.vision.config import TrainMapperConfig, VisualFeaturesConfig
from prefgen.vision.extractors import ImageSizeError
from prefgen.vision.mapper import Discriminator, Generator
from prefgen.vision.prepare import prepare_images
from prefgen.vision.scorer import CONFIG_FILE, MAPPER_FILE, PreferenceScorer, UnknownSegmentError, read_mapper_config
from tests.vision.test_mapper import planted

TINY_CLIP = semantic.ClipConfig(embed_dim=16, image_size=32, vision_width=32, vision_layers=1, vision_heads=2, vision_patch=8)


def _image(path, seed: int, size: int = 32) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def world(tmp_path):
    torch.manual_seed(0)
    semantic.save_model(semantic.build_clip(TINY_CLIP), TINY_CLIP, tmp_path / "clip")
    (tmp_path / "raw" / "images").mkdir(parents=True)
    for k in range(5):
        _image(tmp_path / "raw" / "images" / f"img{k}.png", k)
    (tmp_path / "tables").mkdir()
    _table(tmp_path, [f"img{k}" for k in range(5)])
    return tmp_path, VisualFeaturesConfig(image_size=32, batch_size=2)


def _features(root, cfg, prepare: bool = True) -> dict:
    """The stage on the images prepared at cfg.image_size (as the pipeline runs prepare_images first), or as they are."""
    if prepare:
        prepare_images(root / "raw", root / "tables" / c.IMAGES_FILE, root / "prepared", cfg.image_size, log=lambda _: None)
    return features.run(cfg, root / "tables", root / "prepared", root / "clip", root / "visual", log=lambda _: None)


def _table(root, ids):
    rows = {"image_id": ids, "path": [f"images/{i}.png" for i in ids], "caption": [""] * len(ids)}
    pl.DataFrame(rows).write_parquet(root / "tables" / c.IMAGES_FILE)


def test_features_are_incremental_and_bad_images_are_counted(world):
    root, cfg = world
    first = _features(root, cfg)
    assert first["computed"] == 5 and first["parts"] == {"semantic": {"rows": 5, "dim": 16}, "style": {"rows": 5, "dim": 64},
                                                         "colour": {"rows": 5, "dim": 68}}
    semantic_before = pl.read_parquet(root / "visual" / "semantic.parquet")
    assert _features(root, cfg)["computed"] == 0  # nothing new: nothing computed
    _image(root / "raw" / "images" / "img4.png", 40)  # new content under an old id: a new prepared file, recomputed
    assert _features(root, cfg)["computed"] == 1
    _image(root / "raw" / "images" / "img4.png", 4)
    assert _features(root, cfg)["computed"] == 1
    assert pl.read_parquet(root / "visual" / "semantic.parquet").equals(semantic_before)
    _image(root / "raw" / "images" / "img5.png", 5)
    _image(root / "raw" / "images" / "img6.png", 6, size=24)  # smaller than the features' size: prepared, scaled up
    (root / "raw" / "images" / "img7.png").write_bytes(b"not a png")
    _table(root, [f"img{k}" for k in range(9)])  # img8 has no file
    third = _features(root, cfg)
    assert third["computed"] == 2 and third["kept"] == 5
    assert third["skipped"] == {"not_an_image": 1, "missing_file": 1}  # the preparation's reasons
    skipped = pl.read_parquet(root / "visual" / "skipped.parquet").sort("image_id")
    assert skipped.rows() == [("img7", "not_an_image"), ("img8", "missing_file")]
    after = pl.read_parquet(root / "visual" / "semantic.parquet")
    assert after.height == 7 and after.filter(~pl.col("image_id").is_in(["img5", "img6"])).equals(semantic_before)
    _image(root / "raw" / "images" / "img9.png", 9)
    _table(root, [f"img{k}" for k in range(10)])
    assert _features(root, cfg, prepare=False)["skipped"] == {"not_an_image": 1, "missing_file": 1, "not_prepared": 1}
    # A retrained semantic tower recomputes the semantic part, keyed by its digest.
    torch.manual_seed(1)
    semantic.save_model(semantic.build_clip(TINY_CLIP), TINY_CLIP, root / "clip")
    assert _features(root, cfg)["computed"] == 8


def _scorer(root, cfg) -> PreferenceScorer:
    data = planted()
    dim = 16 + 64 + 68
    data.features, data.val_features = torch.randn(len(data.features), dim), torch.randn(len(data.val_features), dim)
    mapper_cfg = TrainMapperConfig(hidden=16)
    torch.manual_seed(mapper_cfg.seed)
    g = Generator(data.features.mean(0), data.features.std(0), data.targets.shape[1], mapper_cfg.hidden)
    d = Discriminator(data.project, mapper_cfg.hidden)
    (root / "mapper").mkdir()
    state = {f"g.{k}": v for k, v in g.state_dict().items()} | {f"d.{k}": v for k, v in d.state_dict().items()}
    save_file(state, root / "mapper" / MAPPER_FILE)
    (root / "mapper" / CONFIG_FILE).write_text(json.dumps({"train_mapper": asdict(mapper_cfg)}))
    (root / "graph").mkdir()
    save_file({"p": data.p, "items": data.targets, "project": data.project}, root / "graph" / "vectors.safetensors")
    segments = [f"ind:u{k}" for k in range(len(data.p))]
    pl.DataFrame({"segment_id": segments, "row": range(len(segments))}).write_parquet(root / "graph" / "segments.parquet")
    pl.DataFrame({"image_id": ["i0"], "row": [0]}).write_parquet(root / "graph" / "items.parquet")
    return PreferenceScorer.from_outputs(root / "mapper", root / "graph", root / "clip", cfg)


def test_scorer_gradient_flows_to_pixels_and_errors_are_clear(world):
    root, cfg = world
    scorer = _scorer(root, cfg)
    pixels = torch.rand(3, 3, 32, 32, requires_grad=True)
    scores = scorer.score(["ind:u0", "ind:u1"], images=pixels)
    assert scores.shape == (2, 3) and bool(((scores > 0) & (scores < 1)).all())
    scores.sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0
    same = scorer.score(["ind:u0"], features=scorer.features(pixels.detach()))
    assert torch.allclose(same, scores[:1].detach(), atol=1e-6)
    with pytest.raises(UnknownSegmentError, match=r"1 unknown segment\(s\), e.g. \['grp:nope'\]"):
        scorer.score(["ind:u0", "grp:nope"], images=pixels)
    with pytest.raises(ImageSizeError, match="images are 64x64; the models expect 32x32"):
        scorer.score(["ind:u0"], images=torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="exactly one of images="):
        scorer.score(["ind:u0"])


def test_a_mapper_folder_that_recorded_its_stage_paths_still_loads(tmp_path):
    """Mapper folders saved before the catalogue of paths hold their stage's path fields in config.json."""
    cfg = TrainMapperConfig(hidden=16, parts="semantic,colour")
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"train_mapper": asdict(cfg) | {"features_dir": "data/03_features/visual",
                                                                                   "out_dir": "data/04_models/mapper"}}))
    assert read_mapper_config(tmp_path) == cfg


def test_moving_the_scorer_moves_every_model_it_scores_with(world):
    """The extractors (the CLIP tower among them) are submodules: `.to(device)` cannot leave one behind."""
    root, cfg = world
    scorer = _scorer(root, cfg)
    assert {"semantic", "style", "colour"} <= set(scorer.extractors)
    assert any(k.startswith("extractors.semantic.model.visual.") for k in scorer.state_dict())
    moved = scorer.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in moved.state_dict().values() if t.is_floating_point())
    assert moved.rows(["ind:u1"]).device == moved.p.device
