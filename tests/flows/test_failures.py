"""Failures leave nothing half-done, and a stage's output reaches the flow's log while the stage runs: the Prefect flows
for real (temporary server), `dvc repro` in throwaway repos, the MLflow store the retrain left, real processes."""

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import mlflow
import polars as pl
import pytest
import yaml
from prefect import flow
from typer.testing import CliRunner

from flows.nightly import _prepare as nightly_prepare
from flows.retrain import dvc_stage, register_bundle, retrain
from prefgen import tracking
from prefgen.cli import app
from prefgen.config import section_config, tracking_config
from prefgen.params import load_params
from prefgen.pipeline import StageError
from prefgen.registry import register, store
from prefgen.registry.store import RegistryError
from tests.conftest import ROOT, free_port, run, wait_until_healthy

pytestmark = pytest.mark.slow


@contextmanager
def task_logs(on_message: Callable[[str], None] = lambda message: None) -> Iterator[list[str]]:
    """Every message the flows' task runs log, in order; `on_message` sees each the moment it is logged."""

    class Relay(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())
            on_message(messages[-1])

    messages: list[str] = []
    handler, logger = Relay(logging.INFO), logging.getLogger("prefect.task_runs")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


@flow
def one_stage(root: str, stage: str) -> dict:
    return dvc_stage(stage, root, True)


@flow
def register_only(root: str) -> dict:
    return register_bundle(root, fresh=True)


# A stage that prints a line (no flush: PYTHONUNBUFFERED must send it at once), then waits until the test, seeing that
# line in the flow's log, lets it go on: with the output read only at the end, it gives up and fails.
TALKING_STAGE = """\
import pathlib, sys, time
print("first line")
deadline = time.monotonic() + 20
while not pathlib.Path("go").exists():
    if time.monotonic() > deadline:
        sys.exit("nobody read the first line while the stage ran")
    time.sleep(0.05)
print("second line")
pathlib.Path("said.txt").write_text("done")
"""


def test_a_stage_output_reaches_the_flow_log_line_by_line_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    project = tmp_path / "repo"  # a DVC repo holding one stage, with the project's params.yaml (the tracking store)
    project.mkdir()
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], project)
    (project / "talk.py").write_text(TALKING_STAGE)
    (project / "dvc.yaml").write_text("stages:\n  talk:\n    cmd: python talk.py\n    deps: [talk.py]\n    outs: [said.txt]\n")
    go = project / "go"
    with task_logs(lambda message: go.touch() if message == "talk: first line" else None) as messages:
        result = one_stage(str(project), "talk")
    assert result["ran"] and (project / "said.txt").read_text() == "done"
    said = [m for m in messages if m.startswith("talk: ")]
    assert said.index("talk: first line") < said.index("talk: second line")
    assert said.index("talk: second line") < messages.index("stage talk done; lineage tags on MLflow run(s) (none logged)")
    assert not any("git add" in m for m in messages)  # DVC's closing hints are still left out


def test_an_unreachable_tracking_server_fails_register_at_once_and_registers_nothing(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")  # the registry and tracking sections
    uri = f"http://127.0.0.1:{free_port()}"  # a port just freed: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(RegistryError, match=f"the MLflow tracking server {uri} does not answer .*: nothing was registered"):
        register_only(str(tmp_path))
    assert time.monotonic() - started < 30
    assert not (tmp_path / "data").exists()  # no bundle assembled either


@contextmanager
def mlflow_server_group(folder) -> Iterator[tuple[subprocess.Popen, str]]:
    """A real `mlflow server` (SQLite store and artefacts under `folder`) in its own process group, so that killing the
    group kills its workers too; yields (process, URL)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "server-art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_healthy(server, f"http://127.0.0.1:{port}/health", "mlflow server", 120)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        kill_group(server)


def kill_group(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()


def test_a_tracking_server_lost_mid_registration_fails_fast_and_the_next_register_judges_the_version(
        trained_project, tmp_path, monkeypatch):
    project, _ = trained_project
    params = load_params(project / "params.yaml")
    cfg = section_config(params, "registry")
    killed_at = []

    with mlflow_server_group(tmp_path) as (server, url):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)

        def kill_once_registered(line: str) -> None:  # the version exists; the champion gate has not judged it yet
            if line.startswith("registered bundle"):
                kill_group(server)
                killed_at.append(time.monotonic())

        with pytest.raises(RegistryError, match=f"the MLflow tracking server {url} stopped answering while registering"):
            register.run(cfg, params, project, log=kill_once_registered, checked_fresh=True)
        assert killed_at and time.monotonic() - killed_at[0] < 30

    with mlflow_server_group(tmp_path) as (_, url):  # the same store, back
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        again = register.run(cfg, params, project, log=lambda line: None, checked_fresh=True)
        assert (again["version"], again["created"], again["gate"]) == ("1", False, "passed")  # judged now, not again registered
        rows = store.versions(mlflow.MlflowClient(), cfg.model_name)
        assert [(r.version, r.aliases, r.gate) for r in rows] == [("1", ["champion"], "passed")]


def bundle_versions(project) -> dict[str, list[str]]:
    """{version: its aliases} of every bundle registered in the project's MLflow store."""
    tracking.configure(tracking_config(load_params(project / "params.yaml")), project)
    return {row.version: sorted(row.aliases) for row in store.versions(mlflow.MlflowClient(), "prefgen-bundle")}


def test_a_stage_failing_mid_retrain_fails_the_flow_registers_nothing_and_the_rerun_starts_there(trained_project):
    project, _ = trained_project
    before = bundle_versions(project)
    assert before == {"1": ["champion"]}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["reference"]["k"] = 5  # `reference`, early in the order, is stale and runs (nothing reads its metrics)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    evaluation = project / "prefgen" / "eval" / "mapper.py"  # code only `eval_mapper` runs, later in the order
    code = evaluation.read_text()
    evaluation.write_text(code + "\nraise RuntimeError('a bug in the evaluation')\n")

    with task_logs() as messages, pytest.raises(StageError, match="RuntimeError: a bug in the evaluation"):
        retrain(str(project))
    assert "stage reference done; lineage tags on MLflow run(s)" in "\n".join(messages)
    # The stage's own error would repeat: it is not retried (each retry waits its backoff first).
    assert messages.count("stage eval_mapper is stale: running dvc repro --single-item eval_mapper") == 1
    assert not any(m.startswith("stage train_w ") for m in messages)  # the flow stopped at the failure
    assert bundle_versions(project) == before  # nothing registered, the champion unchanged

    evaluation.write_text(code + "\n# the bug fixed\n")
    again = retrain(str(project))
    assert [r["stage"] for r in again if r["ran"]] == ["eval_mapper"]  # reference is not run again
    assert again[-1]["version"] == "1" and not again[-1]["created"]  # the same models: the same bundle, version 1
    assert bundle_versions(project) == before


def cli_ok(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.stdout


def test_regenerate_exits_1_and_says_why_when_the_file_or_its_bundle_changed(trained_project, monkeypatch):
    project, _ = trained_project
    monkeypatch.chdir(project)
    segment = pl.read_parquet(project / "data" / "04_models" / "graph" / "segments.parquet")["segment_id"][0]
    made = json.loads(cli_ok("generate", "--segment", segment, "--prompt", "a star", "--n", "1", "--out", "out").splitlines()[-1])
    image = project / "out" / made["files"][0]
    png = image.read_bytes()
    image.write_bytes(png[:-1] + bytes([png[-1] ^ 1]))  # one bit flipped since it was made
    edited = CliRunner().invoke(app, ["regenerate", str(image)])
    assert edited.exit_code == 1, edited.output
    flipped = hashlib.sha256(image.read_bytes()).hexdigest()
    assert f"is not the image its manifest recorded (file sha256 {flipped}, made as {image.stem})" in edited.output
    assert json.loads(edited.stdout.splitlines()[-1])["match"]  # made again, the image is the one the manifest records

    image.write_bytes(png)
    weights = sorted((project / "mlartifacts" / "models").rglob("*.safetensors"))  # the registered bundle's, in the store
    assert weights
    for file in weights:
        file.write_bytes(file.read_bytes() + b"\0")
    changed = CliRunner().invoke(app, ["regenerate", str(image)])
    assert changed.exit_code == 1, changed.output
    assert "MISMATCH: prefgen-bundle version 1, which made the image, changed since" in changed.output


def test_a_worse_bundle_becomes_challenger_and_the_champion_keeps_serving(trained_project):
    project, first = trained_project
    params = yaml.safe_load((project / "params.yaml").read_text())
    tolerance = next(m["tolerance"] for m in params["registry"]["gate_metrics"] if m["name"] == "eval_graph.test.influence_spearman")
    champion_rho = first[-1]["metrics"]["eval_graph.test.influence_spearman"]
    assert champion_rho > tolerance  # what makes the bundle below worse by construction, not by its seed
    # Without the influence attention every member of a group weighs the same; a constant within every group scores
    # Spearman 0 there (eval/reference.group_spearman), so influence_spearman is exactly 0, below champion - tolerance.
    # train_graph and what reads its models rerun; ingest, split, centrality, clip, features, vq and oracle do not.
    params["train_graph"]["use_influence"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    with task_logs() as messages:
        result = retrain(str(project))
    assert [r["stage"] for r in result[:-1] if r["ran"]] == ["train_graph", "eval_graph", "eval_holdout", "train_mapper", "eval_mapper",
                                                              "train_w", "train_diffusion", "eval_generation", "eval_guidance"]
    bundle = result[-1]
    assert (bundle["version"], bundle["created"], bundle["gate"], bundle["aliases"]) == ("2", True, "refused", ["challenger"])
    assert bundle["metrics"]["eval_graph.test.influence_spearman"] == 0.0
    assert bundle["reasons"][0].startswith(f"eval_graph.test.influence_spearman 0.0000 vs champion {champion_rho:.4f} (WORSE")
    assert any(m.startswith("champion gate refused version 2 (now challenger)") for m in messages)
    assert bundle_versions(project) == {"1": ["champion"], "2": ["challenger"]}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        night = nightly_prepare(str(project), None, "after-a-worse-retrain")  # how the nightly flow resolves its bundle
    assert (night.cfg.bundle, night.loaded.ref.version) == ("champion", "1")
