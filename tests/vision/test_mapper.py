"""Step 2's GAN mapper: tiny seeded models on CPU, planted preferences, resume after a kill, bad checkpoints."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from prefgen.checkpoint import CheckpointError
from prefgen.vision.config import TrainMapperConfig
from prefgen.vision.mapper import preference
from prefgen.vision.train_mapper import MapperData, fit, validate
from prefgen.vision.vbpr import VBPRConfig, fit_vbpr

CFG = TrainMapperConfig(hidden=32, batch_size=16, lr=0.005, max_epochs=8, patience=10, threads=1)


def planted(seed: int = 0) -> MapperData:
    """Two kinds of images (feature sign of the first column); segments of kind k like images of kind k."""
    rng = np.random.default_rng(seed)
    n_train, n_val, n_seg, dim, d = 60, 20, 10, 12, 8

    def images(n):
        kind = np.arange(n) % 2
        v = rng.normal(size=(n, dim))
        v[:, 0] = np.where(kind == 1, 2.0, -2.0) + 0.3 * rng.normal(size=n)
        return kind, torch.as_tensor(v, dtype=torch.float32)

    kind, features = images(n_train)
    val_kind, val_features = images(n_val)
    seg_kind = np.arange(n_seg) % 2
    centre = rng.normal(size=(2, d))
    targets = torch.as_tensor(centre[kind] + 0.1 * rng.normal(size=(n_train, d)), dtype=torch.float32)
    p = torch.as_tensor(np.concatenate([centre[seg_kind], centre[seg_kind]], axis=1), dtype=torch.float32)
    pairs = np.array([(s, i) for s in range(n_seg) for i in rng.choice(np.flatnonzero(kind == seg_kind[s]), 8, replace=False)])
    val_pos = [(s, np.flatnonzero(val_kind == seg_kind[s])) for s in range(n_seg)]
    project = torch.cat([torch.eye(d), torch.zeros(d, d)], dim=1)
    return MapperData(features, targets, p, project, pairs, val_features, val_pos)


def test_preference_is_a_probability_for_every_pair():
    data = planted()
    g, d, _ = fit(data, replace(CFG, max_epochs=1), log=lambda _: None)
    scores = preference(g, d, data.p[:3], data.val_features)
    assert scores.shape == (3, len(data.val_features)) and bool(((scores > 0) & (scores < 1)).all())


def test_training_is_deterministic_and_learns_planted_preferences():
    data = planted()
    g1, d1, h1 = fit(data, CFG, log=lambda _: None)
    g2, d2, h2 = fit(data, CFG, log=lambda _: None)
    assert h1.epochs[-1]["loss_d"] == h2.epochs[-1]["loss_d"]
    assert all(torch.equal(a, b) for a, b in zip(g1.state_dict().values(), g2.state_dict().values()))
    assert validate(g1, d1, data) > 0.9 and h1.best_score > 0.9


@pytest.mark.parametrize("adversarial", [True, False])
def test_both_loss_settings_train(adversarial):
    data = planted()
    _, _, history = fit(data, replace(CFG, adversarial=adversarial), log=lambda _: None)
    assert np.isfinite([e["loss_g"] for e in history.epochs]).all() and history.best_score > 0.8


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    data = planted()
    full_g, _, full = fit(data, CFG, log=lambda _: None)

    def killer(line):
        if line.startswith("epoch   2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(data, CFG, tmp_path, log=killer)
    lines = []
    g, _, resumed = fit(data, CFG, tmp_path, log=lines.append)
    assert lines[0] == "resumed at epoch 3"
    assert [e["loss_g"] for e in resumed.epochs] == [e["loss_g"] for e in full.epochs]
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), full_g.state_dict().values()))


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    data = planted()
    fit(data, replace(CFG, max_epochs=1), tmp_path, log=lambda _: None)
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="checkpoint.safetensors: corrupt or truncated"):
        fit(data, replace(CFG, max_epochs=1), tmp_path, log=lambda _: None)


def test_vbpr_baseline_learns_the_planted_preferences():
    data = planted()
    model = fit_vbpr(data, VBPRConfig(max_epochs=15, batch_size=32, lr=0.02), log=lambda _: None)
    with torch.no_grad():
        scores = model(torch.arange(len(data.p)), data.val_features).numpy()
    kinds = np.arange(len(data.val_features)) % 2
    assert (scores[0][kinds == 0].mean() > scores[0][kinds == 1].mean()) and (scores[1][kinds == 1].mean() > scores[1][kinds == 0].mean())
