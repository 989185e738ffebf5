"""Step 3.3: the conditioned UNet and its training on the core (tiny seeded models on CPU): EMA, resume, the stage,
and data parallelism on two gloo processes."""

import json
import subprocess
import sys
from dataclasses import replace

import polars as pl
import pytest
import torch
from diffusers import UNet2DConditionModel

from prefgen import checkpoint
from prefgen.generation import train_diffusion as trainer
from prefgen.generation.unet import build_noise_scheduler, build_unet, context, drop_conditions
from prefgen.params import load_params
from prefgen.paths import Paths
from prefgen.stages import train_diffusion as stage
from prefgen.training.config import TrainerConfig, Training
from tests.conftest import ROOT
from tests.generation.tiny import DIFFUSION, diffusion_data

CPU = TrainerConfig(device="cpu")
QUIET = {"log": lambda _: None}


def sha(unet) -> str:
    return trainer.weights_sha256(unet)


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


def test_training_is_deterministic_and_keeps_the_last_epochs_ema_weights(tmp_path):
    data = diffusion_data()
    unet, history = trainer.fit(data, DIFFUSION, CPU, tmp_path / "checkpoint", tmp_path / "curve.csv", **QUIET)
    again, _ = trainer.fit(data, DIFFUSION, CPU, **QUIET)
    assert sha(unet) == sha(again)
    assert history.world_size == 1 and [e["epoch"] for e in history.epochs] == [0, 1, 2]
    saved = checkpoint.load(tmp_path / "checkpoint")[0]
    params = [p for _, p in unet.named_parameters()]
    shadow = [saved[f"ema.unet.{i}"] for i in range(len(params))]
    raw = [saved[f"model.unet.{name}"] for name, _ in unet.named_parameters()]
    assert all(torch.equal(p, s) for p, s in zip(params, shadow, strict=True))  # the EMA's weights come out
    assert not all(torch.equal(p, r) for p, r in zip(params, raw, strict=True))  # not the raw training weights
    # The last epoch was validated on the weights that come out.
    assert history.epochs[-1]["val_loss"] == pytest.approx(trainer.validation_loss(unet, data, DIFFUSION), rel=1e-6)
    assert pl.read_csv(tmp_path / "curve.csv")["val_loss"].to_list() == [e["val_loss"] for e in history.epochs]


def test_training_lowers_the_loss_on_learnable_data():
    """Latents that are a function of the text condition: the conditioned denoiser must learn them."""
    conditions = diffusion_data(n=48)
    text, val_text = conditions.text, conditions.val_text
    data = trainer.tensor_data(text[:, :4, None, None].expand(-1, -1, 8, 8).contiguous(), text, conditions.pref,
                               val_text[:, :4, None, None].expand(-1, -1, 8, 8).contiguous(), val_text, conditions.val_pref)
    cfg = replace(DIFFUSION, epochs=8, lr=0.003)
    _, history = trainer.fit(data, cfg, CPU, **QUIET)
    assert history.epochs[-1]["loss"] < 0.8 * history.epochs[0]["loss"]


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    data = diffusion_data()
    full, full_history = trainer.fit(data, DIFFUSION, CPU, **QUIET)

    def killer(line):
        if line.startswith("diffusion epoch 1/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(data, DIFFUSION, CPU, tmp_path, log=killer)
    lines = []
    resumed, history = trainer.fit(data, DIFFUSION, CPU, tmp_path, log=lines.append)
    assert lines[0].startswith("diffusion: resumed after epoch 1") and len(lines) == 2
    assert [e["loss"] for e in history.epochs] == [e["loss"] for e in full_history.epochs]
    assert sha(resumed) == sha(full)


def test_more_epochs_extend_a_finished_run_and_fewer_start_afresh(tmp_path):
    """A finished 2-epoch run, asked for 3, trains one more epoch and ends bit-equal to a 3-epoch run from scratch."""
    data, shorter = diffusion_data(), replace(DIFFUSION, epochs=2)
    trainer.fit(data, shorter, CPU, tmp_path, **QUIET)
    lines = []
    extended, history = trainer.fit(data, DIFFUSION, CPU, tmp_path, log=lines.append)
    assert lines[0].startswith("diffusion: resumed after epoch 1") and len(lines) == 2
    scratch, scratch_history = trainer.fit(data, DIFFUSION, CPU, **QUIET)
    assert sha(extended) == sha(scratch)
    assert [e["loss"] for e in history.epochs] == [e["loss"] for e in scratch_history.epochs]
    lines = []
    cut, _ = trainer.fit(data, shorter, CPU, tmp_path, log=lines.append)
    assert not lines[0].startswith("diffusion: resumed") and len(lines) == 2
    assert sha(cut) == sha(trainer.fit(data, shorter, CPU, **QUIET)[0])


def test_the_stage_writes_the_kept_unet_its_curve_and_metrics(tmp_path, monkeypatch):
    paths = Paths.from_params(load_params(ROOT / "params.yaml")).rooted(tmp_path)
    data = diffusion_data()
    monkeypatch.setattr(stage, "diffusion_inputs", lambda cfg, paths, skipped: data)
    cfg = stage.load_config({"train_diffusion": {"epochs": 2}, "trainer": {"device": "cpu"}})
    assert isinstance(cfg, Training) and cfg.trainer == CPU and cfg.model.epochs == 2
    result = stage.run(Training(replace(DIFFUSION, epochs=2), CPU), paths, **QUIET)
    assert result["epochs"] == 2 and result["steps"] == 2 * 3 and result["world_size"] == 1 and result["ranks_identical"]
    assert result["device"] == "cpu" and result["val_loss"] == pl.read_csv(paths.curve_file("train_diffusion"))["val_loss"][-1]
    saved = UNet2DConditionModel.from_pretrained(paths.diffusion / "unet")
    kept, _ = trainer.fit(data, replace(DIFFUSION, epochs=2), CPU, **QUIET)
    assert sha(saved) == sha(kept) == result["rank_weight_sha256"][0]


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.generation.diffusion_ddp_worker", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["hashes"] == ranks[1]["hashes"] and len(ranks[0]["hashes"]) == 2 and len(set(ranks[0]["hashes"])) == 1
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the loss averaged over processes, the same on both
    assert (tmp_path / "checkpoint" / "checkpoint.json").is_file() and (tmp_path / "curve.csv").is_file()  # written by rank 0
