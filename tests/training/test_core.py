"""The training core on a tiny seeded task: kept epoch, patience, exact resume (also after a real SIGKILL),
EMA, gradient accumulation, two gloo processes against one, and the device and precision settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from prefgen import checkpoint
from prefgen.params import ConfigError
from prefgen.training import records
from prefgen.training.config import TrainerConfig
from prefgen.training.core import Schedule, fit
from tests.training.tiny_task import TinyTask

CPU = TrainerConfig(device="cpu")
ROOT = Path(__file__).resolve().parents[2]


def weights(modules) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in modules["net"].state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0.0, msg=key)


def quiet(_line: str) -> None:
    pass


def test_fit_keeps_the_best_epoch_and_stops_when_patience_runs_out(tmp_path):
    task = TinyTask(Schedule(max_epochs=40, monitor="val_loss", mode="min", patience=2))
    modules, history = fit(task, CPU, curve=tmp_path / "curve.csv", log=quiet)
    scores = [row["val_loss"] for row in history.epochs]
    assert history.best_epoch == scores.index(min(scores)) and history.best_score == min(scores)
    assert len(history.epochs) == history.best_epoch + 3 < 40  # two epochs without a better score, then stop
    assert [row["epoch"] for row in history.epochs] == list(range(len(scores)))  # 0-based, one row per epoch
    kept = task.validate(modules)["val_loss"]
    assert kept == pytest.approx(min(scores), rel=1e-6)  # the modules hold the best epoch's weights
    curve = pl.read_csv(tmp_path / "curve.csv")
    assert curve["val_loss"].to_list() == pytest.approx(scores) and {"loss", "seconds"} <= set(curve.columns)


def test_keep_last_returns_the_last_epoch():
    task = TinyTask(Schedule(max_epochs=3, monitor="val_loss", mode="min", keep="last"))
    modules, history = fit(task, CPU, log=quiet)
    assert task.validate(modules)["val_loss"] == pytest.approx(history.epochs[-1]["val_loss"], rel=1e-6)
    assert history.kept_epoch(task.schedule) == 2


def test_resume_extends_a_run_exactly(tmp_path):
    schedule = Schedule(max_epochs=4, monitor="val_loss", mode="min", seed=3)
    whole, whole_history = fit(TinyTask(schedule), CPU, log=quiet)
    lines: list[str] = []
    fit(TinyTask(replace(schedule, max_epochs=2)), CPU, tmp_path, log=lines.append)
    resumed, history = fit(TinyTask(schedule), CPU, tmp_path, log=lines.append)
    assert any("resumed after epoch 1" in line for line in lines)
    assert_same(weights(resumed), weights(whole))  # dropout and noise are drawn from (seed, epoch): bit-equal
    assert [r["val_loss"] for r in history.epochs] == [r["val_loss"] for r in whole_history.epochs]
    assert history.best_epoch == whole_history.best_epoch


def test_a_finished_run_resumed_writes_its_curve_again(tmp_path):
    """A stage rerun for a setting outside the resume key resumes a finished run and trains no epoch; DVC has
    removed its outputs first, the curve among them."""
    schedule = Schedule(max_epochs=2, monitor="val_loss", mode="min")
    fit(TinyTask(schedule), CPU, tmp_path / "ckpt", curve=tmp_path / "curve.csv", log=quiet)
    first = pl.read_csv(tmp_path / "curve.csv")
    (tmp_path / "curve.csv").unlink()
    lines: list[str] = []
    fit(TinyTask(schedule), CPU, tmp_path / "ckpt", curve=tmp_path / "curve.csv", log=lines.append)
    assert any("resumed after epoch 1" in line for line in lines) and pl.read_csv(tmp_path / "curve.csv").equals(first)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    fit(TinyTask(Schedule(max_epochs=2)), CPU, tmp_path, log=quiet)
    lines: list[str] = []
    _, history = fit(TinyTask(Schedule(max_epochs=2), batch_size=8), CPU, tmp_path, log=lines.append)
    assert not any("resumed" in line for line in lines) and len(history.epochs) == 2


def test_a_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path):
    fit(TinyTask(Schedule(max_epochs=1)), CPU, tmp_path, log=quiet)
    (tmp_path / checkpoint.TENSORS).write_bytes(b"not safetensors")
    with pytest.raises(checkpoint.CheckpointError, match=checkpoint.TENSORS):
        fit(TinyTask(Schedule(max_epochs=2)), CPU, tmp_path, log=quiet)


def test_ema_weights_are_validated_and_kept():
    task = TinyTask(Schedule(max_epochs=3, keep="last"), ema_decay=0.5)
    modules, history = fit(task, CPU, log=quiet)
    plain, _ = fit(TinyTask(Schedule(max_epochs=3, keep="last")), CPU, log=quiet)
    assert task.validate(modules)["val_loss"] == pytest.approx(history.epochs[-1]["val_loss"], rel=1e-6)
    assert not torch.equal(modules["net"][0].weight, plain["net"][0].weight)  # the EMA's average, not the last step


def test_gradient_accumulation_matches_a_larger_batch():
    schedule = Schedule(max_epochs=2)
    big, _ = fit(TinyTask(schedule, batch_size=16, stochastic=False), CPU, log=quiet)
    accumulated, _ = fit(TinyTask(schedule, batch_size=8, stochastic=False), replace(CPU, grad_accum_steps=2), log=quiet)
    assert_same(weights(accumulated), weights(big), atol=1e-6)


def test_bf16_on_the_cpu_when_asked():
    _, history = fit(TinyTask(Schedule(max_epochs=1)), replace(CPU, mixed_precision="bf16"), log=quiet)
    assert (history.device, history.mixed_precision) == ("cpu", "bf16")
    _, default = fit(TinyTask(Schedule(max_epochs=1)), TrainerConfig(device="cpu"), log=quiet)
    assert default.mixed_precision == "no"  # auto is off on the CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_asked_without_a_gpu_is_an_error():
    with pytest.raises(ConfigError, match="trainer.device is cuda"):
        fit(TinyTask(Schedule(max_epochs=1)), TrainerConfig(device="cuda"), log=quiet)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        fit(TinyTask(Schedule(max_epochs=1)), TrainerConfig(device="cpu", mixed_precision="fp16"), log=quiet)


def run_tiny(out: Path, checkpoints: str, epochs: int, batch: int, sleep: float = 0.0, stochastic: bool = True,
             processes: int = 1) -> subprocess.Popen:
    args = [str(out), checkpoints, str(epochs), str(batch), str(sleep), "1" if stochastic else "0"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m"] \
        if processes > 1 else [sys.executable, "-m"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*launcher, "tests.training.tiny_task", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def test_sigkill_mid_epoch_then_rerun_ends_with_the_uninterrupted_weights(tmp_path):
    finish(run_tiny(tmp_path / "whole.safetensors", "-", 5, 16))
    killed = run_tiny(tmp_path / "killed.safetensors", str(tmp_path / "ck"), 5, 16, sleep=0.25)
    meta = tmp_path / "ck" / checkpoint.META
    deadline = time.monotonic() + 240
    while not (meta.is_file() and json.loads(meta.read_text())["epoch"] >= 2):
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.4)  # inside epoch 2's four batches
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "killed.safetensors").exists()
    output = finish(run_tiny(tmp_path / "killed.safetensors", str(tmp_path / "ck"), 5, 16))
    assert "resumed after epoch" in output
    assert_same(load_file(tmp_path / "killed.safetensors"), load_file(tmp_path / "whole.safetensors"))


def test_two_gloo_processes_step_like_one_process_at_the_same_global_batch(tmp_path):
    finish(run_tiny(tmp_path / "one.safetensors", "-", 3, 16, stochastic=False))
    output = finish(run_tiny(tmp_path / "two.safetensors", "-", 3, 16, stochastic=False, processes=2))
    assert "epoch 2/2" in output
    # Each process averages its half of every batch and DDP averages the two: the same gradient, summed in another order.
    assert_same(load_file(tmp_path / "two.safetensors"), load_file(tmp_path / "one.safetensors"), atol=1e-5)


def test_epochs_are_logged_to_the_active_mlflow_run_under_names_mlflow_accepts(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = mlflow.set_experiment("records")  # not the active experiment another test in this process left
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        epochs = records.MlflowEpochs("graph", every_s=3600)
        epochs.add({"epoch": 3, "val_user_HR@10": 0.5, "loss": 1.25})
        for epoch in range(4, 604):  # 1,200 metrics: more than one MLflow batch
            epochs.add({"epoch": epoch, "val_user_HR@10": 0.5, "loss": float(epoch)})
        assert mlflow.MlflowClient().get_run(run.info.run_id).data.metrics == {}  # held until the interval or the flush
        epochs.flush()
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert logged == {"graph.val_user_HR_at_10": 0.5, "graph.loss": 603.0}
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "graph.loss")
    assert sorted(m.step for m in history) == list(range(3, 604)) and min(history, key=lambda m: m.step).value == 1.25


def test_stages_that_decode_no_image_do_not_import_diffusers():
    """diffusers takes seconds to import (BENCHMARKS.md, "Figures behind code choices"): only the stages that encode or
    generate images, and trainers with an EMA, pay it; every DVC stage is its own process."""
    stages = ["train_graph", "train_mapper", "eval_mapper", "train_w", "train_clip", "visual_features", "prepare_images"]
    code = ("import importlib, sys\n"
            f"for name in {stages!r}:\n"
            "    importlib.import_module('prefgen.stages.' + name)\n"
            "print('diffusers' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
