"""The evaluation oracle: exact hue on renders, a trained shape/pattern classifier, and never a guide."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from prefgen.eval.config import TrainOracleConfig
from prefgen.eval.oracle import CONFIG, Oracle, measure_hue, rendered_set, run
from tests.conftest import ROOT


def test_hue_is_read_exactly_from_pixels_sharp_or_blurred():
    pixels, hue, _, _ = rendered_set(300, 32, seed=5)
    x = pixels.float() / 255
    assert (measure_hue(x).numpy() == hue).all()
    assert (measure_hue(gaussian_blur(x, kernel_size=5, sigma=1.0)).numpy() == hue).mean() > 0.99


def test_an_image_without_a_coloured_shape_has_no_hue():
    grey = torch.full((2, 3, 32, 32), 0.8)
    grey[1, 0] = 0.85  # a faint tint, like a background
    assert measure_hue(grey).tolist() == [-1, -1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle") / "oracle"
    torch.set_num_threads(1)
    cfg = TrainOracleConfig(n_train=3000, n_test=300, image_size=32, width=8, feature_dim=16, epochs=8, lr=0.004, threads=1)
    return cfg, out, run(cfg, out, log=lambda _: None)


def test_the_classifier_learns_shape_and_pattern_from_its_own_renders(trained):
    metrics = trained[2]
    assert metrics["test_hue_accuracy"] == 1.0
    assert metrics["test_shape_accuracy"] > 0.6 and metrics["test_pattern_accuracy"] > 0.6  # 0.25 is chance


def test_saved_oracle_reads_images_and_refuses_other_sizes(trained):
    cfg, out, _ = trained
    oracle = Oracle.load(out)
    pixels, hue, shape, _ = rendered_set(64, 32, seed=99)
    reading = oracle.read(pixels.float() / 255)
    assert reading.features.shape == (64, cfg.feature_dim) and (reading.hue == hue).all()
    assert (reading.shape == shape).mean() > 0.5
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        oracle.read(torch.zeros(1, 3, 64, 64))


def test_training_is_seeded(trained, tmp_path):
    cfg, _, metrics = trained
    again = run(cfg, tmp_path / "o", log=lambda _: None)
    assert {k: v for k, v in again.items() if k != "train_seconds"} == {k: v for k, v in metrics.items() if k != "train_seconds"}


def test_an_oracle_saved_with_its_output_paths_in_the_config_still_loads(trained, tmp_path):
    cfg, out, _ = trained
    old = tmp_path / "old"
    shutil.copytree(out, old)
    saved = json.loads((old / CONFIG).read_text())
    saved["train_oracle"] |= {"out_dir": "data/04_models/oracle", "metrics": "data/metrics/train_oracle.json"}
    (old / CONFIG).write_text(json.dumps(saved))
    assert Oracle.load(old).image_size == cfg.image_size


def test_no_generation_or_vision_module_uses_the_oracle():
    """The oracle judges; a guide built from it would grade its own homework."""
    for folder in ("generation", "vision", "preference", "stages"):
        for path in (ROOT / "prefgen" / folder).rglob("*.py"):
            if path.name in ("eval_generation.py", "train_oracle.py"):
                continue
            assert not re.search(r"eval\.oracle|import oracle", path.read_text()), f"{path.relative_to(ROOT)} imports the oracle"


def test_the_oracle_reads_where_its_network_is_and_hands_back_numpy(trained):
    _, out, _ = trained
    pixels = rendered_set(16, 32, seed=7)[0].float() / 255
    oracle = Oracle.load(out, device="cpu")
    reading = oracle.read(pixels)
    assert oracle.device == torch.device("cpu") and isinstance(reading.features, np.ndarray)
    in_double = Oracle(Oracle.load(out).net.double(), oracle.image_size).read(pixels)  # float32 pixels meet float64 weights
    assert (in_double.shape == reading.shape).all() and (in_double.hue == reading.hue).all()
