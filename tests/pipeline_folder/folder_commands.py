"""The commands a user runs on a pipeline folder, and the micro settings the folder tests train at."""

import os
import subprocess
import sys

import yaml

from tests.conftest import ROOT, shrink
from tests.tiny_pipeline import tiny_trainers


def edit_params(folder, edit) -> None:
    """`edit` (a function of the parsed params) applied to the folder's params.yaml, as a user edits the file."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    edit(params)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def micro(folder):
    """The folder's params cut to a few seconds per stage (a user's edit of the generated file)."""

    def cut(params):
        tiny_trainers(params)
        shrink(params, "sampler", steps=4)
        params["nightly"]["dask"]["n_workers"] = 0

    edit_params(folder, cut)


def prefgen(cwd, *args, timeout=900) -> subprocess.CompletedProcess:
    """The prefgen command as a user runs it; this checkout's prefgen, as the folder's DVC stages import it too."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    done = subprocess.run([sys.executable, "-m", "prefgen", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefgen {args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done
