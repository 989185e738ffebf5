"""prefgen.checkpoint: atomic save, resume only on the same format, config and data, clear errors when corrupt."""

import json

import numpy as np
import pytest
import torch

from prefgen import checkpoint


def test_resume_only_matches_the_same_format_config_and_data(tmp_path):
    rng = np.random.default_rng(0)
    rng_tensors, rng_meta = checkpoint.rng_state(rng)
    checkpoint.save(tmp_path, {"w": torch.ones(2)} | rng_tensors, {"config": {"lr": 1}, "data_key": "abc", **rng_meta})
    expected = rng.random()
    tensors, meta = checkpoint.load_matching(tmp_path, {"lr": 1}, "abc")
    assert torch.equal(tensors["w"], torch.ones(2)) and meta["format"] == checkpoint.FORMAT
    checkpoint.restore_rng(tensors, meta, rng)
    assert rng.random() == expected  # the numpy stream continues where it was saved
    assert checkpoint.load_matching(tmp_path, {"lr": 2}, "abc") is None
    assert checkpoint.load_matching(tmp_path, {"lr": 1}, "other data") is None
    old = json.loads((tmp_path / checkpoint.META).read_text()) | {"format": checkpoint.FORMAT - 1}
    (tmp_path / checkpoint.META).write_text(json.dumps(old))
    assert checkpoint.load_matching(tmp_path, {"lr": 1}, "abc") is None
    assert checkpoint.load(tmp_path / "none") is None


def test_corrupt_files_are_named(tmp_path):
    checkpoint.save(tmp_path, {"w": torch.ones(2)}, {"config": {}})
    (tmp_path / checkpoint.META).write_text('{"config": ')
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint.json: corrupt or truncated checkpoint metadata"):
        checkpoint.load(tmp_path)
    checkpoint.save(tmp_path, {"w": torch.ones(2)}, {"config": {}})
    (tmp_path / checkpoint.TENSORS).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint.safetensors: missing"):
        checkpoint.load(tmp_path)


def test_optimizer_state_round_trips(tmp_path):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=0.1)
    weight.sum().backward()
    optimizer.step()
    tensors, meta = checkpoint.optimizer_tensors(optimizer)
    checkpoint.save(tmp_path, tensors, {"optimizer": meta})
    fresh = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.5)
    loaded, loaded_meta = checkpoint.load(tmp_path)
    checkpoint.restore_optimizer(fresh, loaded, loaded_meta["optimizer"])
    assert fresh.param_groups[0]["lr"] == 0.1
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
