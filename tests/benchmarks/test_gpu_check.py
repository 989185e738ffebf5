"""The GPU check's reduced form on the CPU, so that it cannot rot between the runs on a GPU machine: every part
runs through the real code with polars, Prefect, MLflow, DVC and MiniLM absent, as on that machine."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

PARTS = ["step1", "clip", "mapper", "vq", "w", "unet", "data_parallel", "sampling"]


def test_gpu_check_runs_every_part_with_only_the_model_code(tmp_path):
    out, scratch = tmp_path / "gpu_check.json", tmp_path / "tmp"
    scratch.mkdir()
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not any(scratch.glob("prefgen-gpu-check-*"))  # its wheels and models go with it
    rows = json.loads(out.read_text())["rows"]
    assert [r["part"] for r in rows] == PARTS and {r["device"] for r in rows} == {"cpu"}
    assert all(r["samples"] > 0 and r["samples_per_second"] > 0 and r["peak_memory_mb"] > 0 for r in rows)
    trained = [r for r in rows if "epochs" in r]
    assert len(trained) == 6 and {r["mixed_precision"] for r in trained} == {"no"}  # auto: off on the CPU
    parallel, sampled = rows[-2], rows[-1]
    assert (parallel["backend"], parallel["world_size"], parallel["loss_finite"]) == ("gloo", 1, True)
    assert sampled["finite"] and sampled["image_shape"] == [3, 32, 32] and sampled["images_per_second"] > 0
