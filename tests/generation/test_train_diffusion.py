"""Step 3.3: the conditioned UNet and its training (tiny seeded models on CPU), resume, EMA, and DDP on gloo."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from prefgen.generation import train_diffusion as trainer
from prefgen.generation.unet import build_noise_scheduler, build_unet, context, drop_conditions
from tests.conftest import ROOT
from tests.generation.tiny import DIFFUSION, diffusion_data

QUIET = {"log": lambda _: None}


def test_the_unet_predicts_noise_of_the_latent_shape_from_two_condition_tokens():
    unet = build_unet(DIFFUSION, latent_channels=4, sample_size=8, cond_dim=8)
    ctx = context(torch.randn(3, 8), torch.randn(3, 8))
    assert ctx.shape == (3, 2, 8)
    assert unet(torch.randn(3, 4, 8, 8), torch.tensor([0, 10, 49]), encoder_hidden_states=ctx).sample.shape == (3, 4, 8, 8)
    with pytest.raises(ValueError, match="must have one shape"):
        context(torch.randn(3, 8), torch.randn(3, 6))
    assert build_noise_scheduler(DIFFUSION).config.prediction_type == "epsilon"


def test_each_condition_is_dropped_on_its_own():
    text, pref = torch.ones(20_000, 2), torch.ones(20_000, 2)
    t, p = drop_conditions(text, pref, 0.1, 0.3, torch.Generator().manual_seed(0))
    t_off, p_off = (t[:, 0] == 0).float(), (p[:, 0] == 0).float()
    assert t_off.mean() == pytest.approx(0.1, abs=0.01) and p_off.mean() == pytest.approx(0.3, abs=0.01)
    assert (t_off * p_off).mean() == pytest.approx(0.03, abs=0.01)  # independent: both dropped 0.1 x 0.3 of the time
    assert ((t == 0) | (t == 1)).all()  # a row is dropped whole or kept whole


def test_training_is_deterministic_and_returns_ema_weights(tmp_path):
    data = diffusion_data()
    unet, history = trainer.fit(data, DIFFUSION, tmp_path, **QUIET)
    again, _ = trainer.fit(data, DIFFUSION, **QUIET)
    assert trainer.weights_sha256(unet) == trainer.weights_sha256(again)
    assert history.world_size == 1 and len(history.rank_weight_sha256) == 1
    assert trainer.weights_sha256(unet) != history.rank_weight_sha256[0]  # EMA weights out, raw weights hashed
    saved = trainer.checkpoint.load(tmp_path)[0]
    assert any(k.startswith("ema.") for k in saved) and any(k.startswith("unet.") for k in saved)


def test_training_lowers_the_loss_on_learnable_data():
    """Latents that are a function of the text condition: the conditioned denoiser must learn them."""
    data = diffusion_data(n=48)
    data.latents = data.text[:, :4, None, None].expand(-1, -1, 8, 8).contiguous()
    data.val_latents = data.val_text[:, :4, None, None].expand(-1, -1, 8, 8).contiguous()
    cfg = trainer.TrainDiffusionConfig(**{**DIFFUSION.__dict__, "epochs": 8, "lr": 0.003})
    _, history = trainer.fit(data, cfg, **QUIET)
    assert history.epochs[-1]["loss"] < 0.8 * history.epochs[0]["loss"]


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    data = diffusion_data()
    full, full_history = trainer.fit(data, DIFFUSION, **QUIET)

    def killer(line):
        if line.startswith("epoch   1"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(data, DIFFUSION, tmp_path, log=killer)
    lines = []
    resumed, history = trainer.fit(data, DIFFUSION, tmp_path, log=lines.append)
    assert lines[0] == "resumed at epoch 2"
    assert [e["loss"] for e in history.epochs] == [e["loss"] for e in full_history.epochs]
    assert trainer.weights_sha256(resumed) == trainer.weights_sha256(full)


def test_more_epochs_extend_a_finished_run_and_fewer_start_afresh(tmp_path):
    """A finished 3-epoch run, asked for 4, trains one more epoch and ends where a 4-epoch run from scratch does."""
    data, longer, shorter = diffusion_data(), replace(DIFFUSION, epochs=4), replace(DIFFUSION, epochs=2)
    trainer.fit(data, DIFFUSION, tmp_path, **QUIET)
    lines = []
    extended, history = trainer.fit(data, longer, tmp_path, log=lines.append)
    assert lines[0] == "resumed at epoch 3" and len(lines) == 2
    scratch, scratch_history = trainer.fit(data, longer, **QUIET)
    assert trainer.weights_sha256(extended) == trainer.weights_sha256(scratch)
    assert [e["loss"] for e in history.epochs] == [e["loss"] for e in scratch_history.epochs]
    lines = []
    cut, _ = trainer.fit(data, shorter, tmp_path, log=lines.append)
    assert not lines[0].startswith("resumed") and len(lines) == 2
    assert trainer.weights_sha256(cut) == trainer.weights_sha256(trainer.fit(data, shorter, **QUIET)[0])


def test_ddp_on_two_gloo_processes_ends_with_identical_weights(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / "tests/generation/tiny.py"), str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["hashes"] == ranks[1]["hashes"] and len(set(ranks[0]["hashes"])) == 1
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the all-reduced loss, the same on both ranks
    assert (tmp_path / "checkpoint" / "checkpoint.json").is_file()  # written by rank 0
