"""The registry commands' one-line refusals: no bundle registered yet, a device this machine lacks."""

import shutil

import pytest
import torch
from typer.testing import CliRunner

from prefgen import tracking
from prefgen.cli import app
from prefgen.config import tracking_config
from prefgen.params import load_params
from tests.conftest import ROOT

NO_BUNDLE = "no bundle registered yet: the registry has no model 'prefgen-bundle' (the retrain flow or `prefgen register` makes one)"


@pytest.mark.parametrize("store", ["none", "empty"])
def test_an_empty_registry_is_one_clear_line(tmp_path, monkeypatch, store):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    if store == "empty":  # a tracking store with runs maybe, but no registered model
        tracking.configure(tracking_config(load_params(tmp_path / "params.yaml")), tmp_path)
    runner = CliRunner()
    for args, code in ((["bundles"], 0), (["promote", "--bundle", "1", "--reason", "r"], 2), (["rollback"], 2)):
        done = runner.invoke(app, args)
        assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
        message = NO_BUNDLE if code == 0 else f"error: {NO_BUNDLE}"
        assert (done.exit_code, done.stdout, done.stderr.strip().splitlines()) == (code, "", [message]), args
    assert (tmp_path / "mlruns.db").exists() == (store == "empty")  # asking created no store


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU where there is none")
def test_a_device_this_machine_lacks_is_refused_in_one_line_before_anything_is_loaded(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for device, message in (("cuda", "device cuda was asked for, but torch sees no CUDA device (give auto or cpu)"),
                            ("gpu", "device 'gpu': give one of ['auto', 'cpu', 'cuda'] (or a named GPU such as cuda:1)")):
        done = runner.invoke(app, ["generate", "--segment", "grp:g1", "--prompt", "a star", "--out", "out", "--device", device])
        assert (done.exit_code, done.stderr.strip()) == (2, f"error: {message}")
        again = runner.invoke(app, ["regenerate", "0123456789abcdef", "--device", device])
        assert (again.exit_code, again.stderr.strip()) == (2, f"error: {message}")
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "out").exists()  # nothing was looked up or made
