"""Shared fixtures: raw-log writers and a throwaway copy of the project as a git + DVC repo."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_LOG = ROOT / "tests" / "data" / "sample_log"
VENV_BIN = str(Path(sys.executable).parent)

DEFAULT_WORLD, TEST_WORLD = "world-v1", "world-test"  # the test project's world: see make_project

GOOD = {"event_id": "e1", "ts": "2026-03-01T10:00:00Z", "actor_id": "u1", "type": "click", "target_id": "img1"}


def event(**overrides) -> dict:
    """A valid event with some fields replaced (a value of ... removes the field)."""
    out = dict(GOOD) | overrides
    return {k: v for k, v in out.items() if v is not ...}


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (dumped as JSON), str (written as is) or bytes (written raw)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            handle.write(row if isinstance(row, bytes) else row.encode("utf-8"))
            handle.write(b"\n")
    return path


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No test touches the user's Prefect home or MLflow store."""
    isolate_env(monkeypatch, tmp_path_factory)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """torch's global generator starts every test, its fixtures included, from the run's seed (pytest-randomly's, printed
    in the header; it reseeds random and numpy, not torch): a test's draws never depend on which tests ran before it."""
    import torch

    seed = item.config.getoption("randomly_seed", 0)
    torch.manual_seed((seed + zlib.crc32(item.nodeid.encode())) % 2**32)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """The order's seed at the end of every run, `-q` included (pytest-randomly prints it only in the header)."""
    seed = config.getoption("randomly_seed", None)
    if seed is not None:
        terminalreporter.write_line(f"tests ran in random order: --randomly-seed={seed} repeats it, -p no:randomly keeps file order")


def isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("prefect-home")
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300"))
    monkeypatch.setenv("PREFECT_LOGGING_TO_API_ENABLED", "false")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def run(cmd: list[str], cwd: Path, activate: bool = False) -> subprocess.CompletedProcess:
    """Run a command; `activate` puts the virtualenv first on PATH, as `source .venv/bin/activate` does."""
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ["PATH"]) if activate else None
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh git + DVC repo holding the pipeline files, like a user's clone."""
    return make_project(tmp_path / "repo")


def shrink(params: dict, section: str, **values) -> None:
    """Set keys of a params section; a key the active (demo) profile sets goes there, as set-once requires."""
    demo = params[section].get("profiles", {}).get("demo", {})
    for key, value in values.items():
        (demo if key in demo else params[section])[key] = value


def make_project(repo: Path) -> Path:
    """The pipeline files in a new git + DVC repo at `repo`, every trainer cut to tiny sizes."""
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", "prefect.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    # The real pipeline with every trainer cut to a few epochs and a tiny image tower: the tests check wiring, not quality.
    # A smaller world than the default one, under its own name (world-v1 is frozen): every stage's time scales with it.
    params = yaml.safe_load((repo / "params.yaml").read_text().replace(DEFAULT_WORLD, TEST_WORLD))
    shrink(params, "synth", n_individuals=800, n_groups=120, group_size_max=20, n_images=600)
    shrink(params, "train_graph", max_epochs=3)
    shrink(params, "train_clip", epochs=1, vision_width=32, vision_layers=1, vision_heads=2)
    shrink(params, "train_mapper", max_epochs=2)
    shrink(params, "train_w", max_epochs=20)
    shrink(params, "train_vq", block_out_channels=[8, 8, 8], norm_num_groups=4, num_vq_embeddings=32, epochs=1)
    shrink(params, "train_diffusion", flip_augment=False, base_channels=8, norm_num_groups=4, epochs=1)
    shrink(params, "train_oracle", n_train=256, n_test=64, width=4, feature_dim=8, epochs=1)
    shrink(params, "sampler", steps=4)
    shrink(params, "eval_generation", prompts=["a star", "a shape on a dots background"], pairs_per_prompt=2,
           images_per_segment=1, images_per_batch=3, bootstrap=50, reference_images=16, min_taste_distance=0.5,
           arms=["none", "cfg", "text_grad", "pref_grad", "fused"])  # every ablation: the tests check the table
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "prefgen", repo / "prefgen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "flows", repo / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "campaigns", repo / "campaigns")
    shutil.copytree(SAMPLE_LOG, repo / "tests" / "data" / "sample_log")
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "ci@prefgen.invalid"], repo)
    run(["git", "config", "user.name", "prefgen ci"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "project"], repo)
    return repo


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on the trained project goes to one xdist worker (`make test` runs `-n 2 --dist loadgroup`): each
    worker is its own session and would train the project again. Without xdist the mark does nothing."""
    for item in items:
        if "trained_original" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained_project"))


@pytest.fixture(scope="session")
def trained_original(tmp_path_factory):
    """(project, first retrain's result): the tiny project after one real retrain flow, bundle version 1 the champion.

    Trained once per session (training every stage is the slow part); tests never touch it, they get `trained_project`.
    """
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain

    with pytest.MonkeyPatch.context() as patch:
        isolate_env(patch, tmp_path_factory)
        repo = make_project(tmp_path_factory.mktemp("trained") / "repo")
        with prefect_test_harness(server_startup_timeout=None):
            first = retrain(str(repo))
    return repo, first


@pytest.fixture
def trained_project(trained_original, tmp_path):
    """(project, first retrain's result): this test's own copy of the trained project, for the flow tests (retrain,
    nightly, deployments) and the DVC test. A test that forgets someone, runs a night or edits params.yaml changes only
    its copy, so every test starts from the project as the retrain left it, in any order."""
    original, first = trained_original
    return copy_project(original, tmp_path / "repo"), first


def copy_project(original: Path, copy: Path) -> Path:
    """A copy of a project with its MLflow store repointed at the copy: MLflow keeps absolute artefact locations."""
    shutil.copytree(original, copy, symlinks=True, copy_function=link_dvc_cache_copy_rest)
    for store in copy.glob("*.db"):
        repoint_sqlite(store, str(original.resolve()), str(copy.resolve()))
    return copy


def link_dvc_cache_copy_rest(src: str, dst: str) -> None:
    # DVC never changes a cache file in place (it writes new ones, named by hash): a copy may share them.
    if f"{os.sep}.dvc{os.sep}cache{os.sep}" in src:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def repoint_sqlite(store: Path, old: str, new: str) -> None:
    """Replace `old` by `new` in every text value of every table of a SQLite database."""
    with closing(sqlite3.connect(store)) as db, db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            texts = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")') if any(t in row[2].upper() for t in ("CHAR", "TEXT"))]
            for column in texts:
                db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0', (old, new, old))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(server: subprocess.Popen, url: str, name: str, timeout: float) -> None:
    """Poll `url` until it answers; fail if the server process exits or `timeout` seconds pass first."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert time.time() < deadline and server.poll() is None, f"{name} did not start"
            time.sleep(0.5)


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real `mlflow server` process (SQLite backend, artefacts served by the server under `folder`); yields its URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "server-art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(server, f"{url}/health", "mlflow server", 120)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
