"""`bundles`, `promote` and `rollback` before any bundle was registered: one line saying so, never a traceback."""

import shutil

import pytest
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
