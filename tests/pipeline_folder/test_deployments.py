"""The folder's prefect.yaml deployed for real from inside the folder, against a `prefect server start` process."""

import pytest

from prefgen.pipeline_folder.create import NewFolder, create
from tests.conftest import ROOT
from tests.flows.test_deployments import api, prefect, prefect_server_process  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


def test_prefect_deploy_all_from_the_folder_creates_both_deployments_on_module_entrypoints(tmp_path, platform,
                                                                                          prefect_server_process):  # noqa: F811
    folder = tmp_path / "mine"
    create(NewFolder(folder, platform["logs"], platform["images"], platform["catalog"]))
    url = prefect_server_process["PREFECT_API_URL"]
    env = prefect_server_process | {"PYTHONPATH": str(ROOT)}  # this checkout's flows, as an installed prefgen would give
    prefect(env, folder, "work-pool", "create", "prefgen", "--type", "process")
    prefect(env, folder, "--no-prompt", "deploy", "--all")
    deployments = {d["name"]: d for d in api(url, "/deployments/filter", {})}
    assert {name: d["entrypoint"] for name, d in deployments.items()} == {"nightly": "flows.nightly.nightly",
                                                                         "weekly-retrain": "flows.folder.retrain_folder"}
    steps = [step for d in deployments.values() for step in d["pull_steps"]]
    assert all(step["prefect.deployments.steps.set_working_directory"]["directory"] == str(folder.resolve()) for step in steps)
