"""prefect.yaml's deployments on a real `prefect server start` process: created with their schedules, and the nightly
one run by a real process worker."""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, free_port, wait_until_healthy

pytestmark = pytest.mark.slow

PREFECT = str(Path(VENV_BIN) / "prefect")


def api(url: str, path: str, body: dict | None = None):
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture
def prefect_server_process(tmp_path):
    """A real Prefect server in its own process and PREFECT_HOME; yields the environment that points at it."""
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(server, f"{env['PREFECT_API_URL']}/health", "prefect server", 180)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=60)


def prefect(env: dict, cwd: Path, *args: str, timeout: int = 300) -> str:
    done = subprocess.run([PREFECT, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_deployments_are_created_with_their_schedules_and_the_nightly_one_runs_on_a_worker(trained_project, prefect_server_process):
    project, _ = trained_project
    env, url = prefect_server_process, prefect_server_process["PREFECT_API_URL"]
    prefect(env, project, "work-pool", "create", "prefgen", "--type", "process")
    prefect(env, project, "--no-prompt", "deploy", "--all")

    deployments = {d["name"]: d for d in api(url, "/deployments/filter", {})}
    assert sorted(deployments) == ["nightly", "weekly-retrain"]
    nightly = deployments["nightly"]
    (schedule,) = nightly["schedules"]
    assert schedule["schedule"] | {"slug": schedule["slug"]} == {"cron": "0 2 * * *", "timezone": "Europe/Berlin",
                                                                 "day_or": True, "slug": "nightly-0200"}
    assert deployments["weekly-retrain"]["schedules"][0]["schedule"]["cron"] == "0 3 * * 0"
    assert nightly["work_pool_name"] == "prefgen" and nightly["entrypoint"] == "flows/nightly.py:nightly"

    prefect(env, project, "deployment", "run", "nightly/nightly", "--param", "night=deployed")
    prefect(env, project, "worker", "start", "--pool", "prefgen", "--run-once", timeout=600)
    runs = api(url, "/flow_runs/filter", {"deployments": {"id": {"any_": [nightly["id"]]}},
                                          "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
    assert any(r["parameters"].get("night") == "deployed" for r in runs), [r["state_type"] for r in runs]
    assert (project / "data" / "07_nightly" / "default" / "deployed" / "gallery" / "index.html").is_file()
