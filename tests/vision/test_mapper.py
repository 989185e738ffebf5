"""Step 2's GAN mapper and the VBPR baseline through the training core: tiny seeded models on CPU, planted
preferences, the D-then-G step, exact resume, bad checkpoints, the stages' config."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from prefgen.checkpoint import CheckpointError, load as load_checkpoint
from prefgen.stages import eval_mapper as eval_mapper_stage, train_mapper as train_mapper_stage
from prefgen.training.config import TrainerConfig
from prefgen.training.core import Loop, make_accelerator
from prefgen.vision.config import TrainMapperConfig
from prefgen.vision.mapper import discriminator_loss, generator_loss, preference
from prefgen.vision.train_mapper import MapperData, MapperTask, fit, frozen, validate
from prefgen.vision.vbpr import VBPRConfig, fit_vbpr

CFG = TrainMapperConfig(hidden=32, batch_size=16, lr=0.005, max_epochs=8, patience=10, threads=1)
CPU = TrainerConfig(device="cpu")


def quiet(_line: str) -> None:
    pass


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


def weights(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [t for m in modules for t in m.state_dict().values()]


def test_preference_is_a_probability_for_every_pair():
    data = planted()
    g, d, _ = fit(data, replace(CFG, max_epochs=1), CPU, log=quiet)
    scores = preference(g, d, data.p[:3], data.val_features)
    assert scores.shape == (3, len(data.val_features)) and bool(((scores > 0) & (scores < 1)).all())


def test_training_is_deterministic_and_learns_planted_preferences():
    data = planted()
    g1, d1, h1 = fit(data, CFG, CPU, log=quiet)
    g2, d2, h2 = fit(data, CFG, CPU, log=quiet)
    assert [e["loss_d"] for e in h1.epochs] == [e["loss_d"] for e in h2.epochs]
    assert all(torch.equal(a, b) for a, b in zip(weights(g1, d1), weights(g2, d2), strict=True))
    assert validate(g1, d1, data) == h1.best_score > 0.9  # the returned models are the best epoch's
    assert h1.epochs[h1.best_epoch]["val_auc"] == h1.best_score and 0 <= h1.best_epoch < len(h1.epochs)


@pytest.mark.parametrize("adversarial", [True, False])
def test_both_loss_settings_train(adversarial):
    data = planted()
    _, _, history = fit(data, replace(CFG, adversarial=adversarial), CPU, log=quiet)
    assert np.isfinite([e["loss_g"] for e in history.epochs]).all() and history.best_score > 0.8


def test_frozen_passes_gradients_to_inputs_only():
    data = planted()
    d = MapperTask(data, CFG).modules()["d"]
    e = torch.randn(4, data.targets.shape[1], requires_grad=True)
    frozen(d)(data.p[:4], e).sum().backward()
    assert e.grad is not None and e.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.parameters())


def test_a_step_updates_d_then_g_as_two_separate_optimisers_would():
    """Two batches through MapperTask.step equal a hand-written loop that zeroes each optimiser's gradients before its
    backward: G's loss must leave no gradient on D for D's next step."""
    data, cfg = planted(), replace(CFG, batch_size=8)
    task = MapperTask(data, cfg)
    modules = task.modules()
    loop = Loop(make_accelerator(CPU), modules, task.optimizers(modules), {}, {})
    loop.start_epoch(cfg.seed, 0)
    reference = task.modules()
    opts = {name: torch.optim.Adam(reference[name].parameters(), lr=cfg.lr, betas=(0.5, 0.999)) for name in ("g", "d")}
    g, d = reference["g"], reference["d"]
    for batch in list(task.batches(0))[:2]:
        state = loop.generator.get_state()
        task.step(batch, loop)
        pairs = batch[0]
        negatives = torch.randint(0, len(data.features), (len(pairs),), generator=torch.Generator().set_state(state))
        p, e_pos, v = data.p[pairs[:, 0]], data.targets[pairs[:, 1]], data.features[pairs[:, 1]]
        for name, loss in (("d", lambda: discriminator_loss(d, p, e_pos, data.targets[negatives], g(v), cfg.bpr_weight, True)),
                           ("g", lambda: generator_loss(d, p, g(v), e_pos, cfg.l2_weight, True))):
            opts[name].zero_grad()
            loss().backward()
            opts[name].step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(weights(modules["g"], modules["d"]), weights(g, d), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights(modules["d"]), weights(task.modules()["d"]), strict=True))


def test_two_epochs_resumed_to_three_equal_three_at_once(tmp_path):
    data = planted()
    g3, d3, once = fit(data, replace(CFG, max_epochs=3), CPU, tmp_path / "once", log=quiet)
    fit(data, replace(CFG, max_epochs=2), CPU, tmp_path / "resumed", log=quiet)
    lines = []
    g, d, resumed = fit(data, replace(CFG, max_epochs=3), CPU, tmp_path / "resumed", log=lines.append)
    assert lines[0].startswith("mapper: resumed after epoch 1") and len(lines) == 2  # only epoch 2 trained again
    assert [e["loss_g"] for e in resumed.epochs] == [e["loss_g"] for e in once.epochs]
    assert resumed.best_epoch == once.best_epoch
    assert all(torch.equal(a, b) for a, b in zip(weights(g, d), weights(g3, d3), strict=True))
    once_tensors, resumed_tensors = (load_checkpoint(tmp_path / run)[0] for run in ("once", "resumed"))
    assert once_tensors.keys() == resumed_tensors.keys() and any(k.startswith("model.d.") for k in once_tensors)
    assert all(torch.equal(once_tensors[k], resumed_tensors[k]) for k in once_tensors if k.startswith(("model.", "optim.")))


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    data = planted()
    fit(data, replace(CFG, max_epochs=1), CPU, tmp_path, log=quiet)
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="checkpoint.safetensors: corrupt or truncated"):
        fit(data, replace(CFG, max_epochs=1), CPU, tmp_path, log=quiet)


def test_vbpr_baseline_learns_the_planted_preferences():
    data = planted()
    model = fit_vbpr(data, VBPRConfig(max_epochs=15, batch_size=32, lr=0.02), CPU, log=quiet)
    with torch.no_grad():
        scores = model(torch.arange(len(data.p)), data.val_features).numpy()
    kinds = np.arange(len(data.val_features)) % 2
    assert (scores[0][kinds == 0].mean() > scores[0][kinds == 1].mean()) and (scores[1][kinds == 1].mean() > scores[1][kinds == 0].mean())


@pytest.mark.parametrize("stage", [train_mapper_stage, eval_mapper_stage])
def test_both_mapper_stages_read_the_mapper_section_and_the_trainer_section(stage):
    params = {"train_mapper": {"hidden": 16, "patience": 3}, "trainer": {"device": "cpu", "grad_accum_steps": 2}}
    cfg = stage.load_config(params)
    assert cfg.model == TrainMapperConfig(hidden=16, patience=3)
    assert cfg.trainer == TrainerConfig(device="cpu", grad_accum_steps=2)
    assert stage.load_config(None).trainer == TrainerConfig()  # a standalone run trains where torch finds a device


def test_under_bf16_autocast_both_models_still_learn_and_come_back_in_float32():
    data, bf16 = planted(), TrainerConfig(device="cpu", mixed_precision="bf16")
    g, d, history = fit(data, CFG, bf16, log=quiet)
    assert history.mixed_precision == "bf16" and history.best_score > 0.8
    assert all(t.dtype == torch.float32 for t in weights(g, d))
    model = fit_vbpr(data, VBPRConfig(max_epochs=15, batch_size=32, lr=0.02), bf16, log=quiet)
    with torch.no_grad():
        scores = model(torch.arange(2), data.val_features).numpy()
    kinds = np.arange(len(data.val_features)) % 2
    assert scores[0][kinds == 0].mean() > scores[0][kinds == 1].mean() and scores[1][kinds == 1].mean() > scores[1][kinds == 0].mean()
