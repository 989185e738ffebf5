"""Bundles: every model in one folder, digests checked on load, nothing but safetensors, JSON and Parquet."""

import json
import shutil

import pytest
import torch

from prefgen.generation.config import GuidanceConfig
from prefgen.registry.bundle import LINEAGE, Bundle, BundleError, assemble, verify
from prefgen.vision.config import VisualFeaturesConfig
from tests.registry.bundles import make_bundle, model_folders


def test_a_bundle_holds_every_part_and_loads_with_its_settings(tmp_path):
    folder, digest = make_bundle(tmp_path, seed=0)
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["clip", "diffusion", "graph", "mapper", "vq", "w"]
    bundle = Bundle.load(folder)
    assert bundle.digest == digest and bundle.sampler.steps == 5
    assert bundle.visual == VisualFeaturesConfig() and bundle.model_dir("clip") == folder / "models" / "clip"  # its own CLIP tower
    assert bundle.lineage()["git"]["git.commit"] == "abc"


def test_the_digest_follows_the_models_not_the_lineage(tmp_path):
    _, first = make_bundle(tmp_path / "a", seed=0, lineage={"created_at": "monday"})
    _, same = make_bundle(tmp_path / "b", seed=0, lineage={"created_at": "tuesday"})
    _, other = make_bundle(tmp_path / "c", seed=1)
    assert first == same and first != other


def test_a_changed_missing_or_extra_file_is_refused_by_name(tmp_path):
    folder, _ = make_bundle(tmp_path, seed=0)
    weights = folder / "models" / "vq" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"changed \['models/vq/model.safetensors'\]"):
        Bundle.load(folder)
    folder, _ = make_bundle(tmp_path / "again", seed=0)
    (folder / "models" / "w" / "config.json").unlink()
    with pytest.raises(BundleError, match=r"missing \['models/w/config.json'\]"):
        verify(folder)
    folder, _ = make_bundle(tmp_path / "third", seed=0)
    (folder / "models" / "w" / "extra.json").write_text("{}")
    with pytest.raises(BundleError, match=r"unexpected \['models/w/extra.json'\]"):
        verify(folder)
    (folder / LINEAGE).write_text(json.dumps({"edited": True}))  # lineage is not covered: still refused for extra.json only


def test_pickles_are_never_bundled_or_loaded(tmp_path):
    parts = model_folders(tmp_path, seed=0)
    (parts["mapper"] / "model.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(BundleError, match=r"\['model.pkl'\] are not safetensors, JSON or Parquet"):
        assemble(parts, torch.ones(2, 2), VisualFeaturesConfig(), GuidanceConfig(), {}, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    folder, _ = make_bundle(tmp_path / "ok", seed=0)
    shutil.copy(parts["mapper"] / "model.pkl", folder / "models" / "mapper" / "model.pkl")
    with pytest.raises(BundleError, match="not safetensors, JSON or Parquet"):
        Bundle.load(folder)


def test_a_missing_part_is_named(tmp_path):
    parts = model_folders(tmp_path, seed=0)
    shutil.rmtree(parts["diffusion"])
    with pytest.raises(BundleError, match=r"no model folder for \['diffusion'\]"):
        assemble(parts, torch.ones(2, 2), VisualFeaturesConfig(), GuidanceConfig(), {}, tmp_path / "b")
