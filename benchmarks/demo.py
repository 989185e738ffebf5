"""Benchmark: the whole demo on a fresh clone, then a second retrain with nothing changed.

    .venv/bin/python benchmarks/demo.py                       # clone HEAD to a temporary folder, reuse this virtualenv
    .venv/bin/python benchmarks/demo.py --keep /tmp/demo      # keep the clone (its data/, mlruns.db, gallery)
    .venv/bin/python benchmarks/demo.py --commit 9a0d265 --label base   # an earlier commit: a baseline run back to back
    .venv/bin/python benchmarks/demo.py --label 128 --set image_size=128 --set synth.world=world-v1-128 \
        --set synth.image_size=128 --set paths.raw=data/01_raw/world-v1-128 --set paths.photos=data/01_raw/world-v1-128 \
        --set paths.truth=data/truth/world-v1-128

Measures, in one run on one machine: the wall time of `python -m flows.demo` (synth -> every
DVC stage at the demo profile -> register -> nightly -> gallery; the issue's budget: 10
minutes on 2 cores with an installed virtualenv), each stage's own time (its MLflow run), then
the wall time of `python -m flows.retrain` with nothing changed (budget: 30 s; it must run no
stage), beside its floor: one `dvc status` of the whole pipeline and one empty Prefect flow
run, which any retrain pays. `--set KEY=VALUE` edits the clone's params.yaml first (a dotted key, a YAML value), so
the same run measures the demo at another image size or on another world. Results, with every stage's metrics, go
to benchmarks/results/demo.json (demo-LABEL.json with --label).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefgen.serving.image_sets import machine  # noqa: E402  (the CPU's kernel extensions move timings and bits)

EMPTY_FLOW = "from prefect import flow\n@flow\ndef empty():\n    return 1\nempty()\n"


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}); see {log}")
    return seconds


def stage_seconds(clone: Path) -> dict[str, float]:
    """Each stage's MLflow run, start to end (the stage's own work, without DVC's start-up)."""
    with sqlite3.connect(clone / "mlruns.db") as db:
        rows = db.execute("SELECT t.value, (r.end_time - r.start_time) / 1000.0 FROM runs r JOIN tags t "
                          "ON t.run_uuid = r.run_uuid AND t.key = 'prefgen.stage' ORDER BY r.start_time").fetchall()
    return {stage: round(seconds, 1) for stage, seconds in rows}


def set_params(params_file: Path, settings: list[str]) -> None:
    """Apply KEY=VALUE settings (dotted keys, YAML values) to a params file, refusing a key it does not have."""
    params = yaml.safe_load(params_file.read_text())
    for setting in settings:
        key, sep, value = setting.partition("=")
        *parents, last = key.split(".")
        section = params
        for name in parents:
            section = section.get(name) if isinstance(section, dict) else None
        if not sep or not isinstance(section, dict) or last not in section:
            sys.exit(f"--set {setting}: expected KEY=VALUE with a key params.yaml has")
        section[last] = yaml.safe_load(value)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def metrics(clone: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((clone / "data" / "metrics").glob("*.json"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    parser.add_argument("--commit", default="HEAD", help="the commit to run (default: HEAD)")
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="KEY=VALUE", help="a params.yaml edit")
    parser.add_argument("--label", default="", help="write benchmarks/results/demo-LABEL.json")
    args = parser.parse_args()
    clone = args.keep or Path(tempfile.mkdtemp(prefix="prefgen-demo-")) / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", args.commit], cwd=clone, check=True)
    set_params(clone / "params.yaml", args.settings)
    os.symlink(ROOT / ".venv", clone / ".venv")  # "an installed virtualenv": the install is not timed
    python = str(clone / ".venv" / "bin" / "python")
    os.environ |= {"PREFECT_HOME": str(clone / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PATH": f"{clone / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True).stdout.strip()

    demo = timed([python, "-m", "flows.demo", "."], clone, clone / "demo.log")
    stages = stage_seconds(clone)
    second = timed([python, "-m", "flows.retrain", "."], clone, clone / "retrain2.log")
    ran = (clone / "retrain2.log").read_text().split("retrain finished: ran ")[-1].splitlines()[0]
    status = timed([python, "-m", "dvc", "status"], clone, clone / "status.log")
    empty_flow = timed([python, "-c", EMPTY_FLOW], clone, clone / "empty_flow.log")
    gallery = (clone / "demo.log").read_text().split("open the gallery: ")[-1].strip()

    result = {"commit": commit, "settings": args.settings, "machine": f"{machine()}, {os.cpu_count()} cores",
              "load_avg_at_end": os.getloadavg(), "demo_seconds": round(demo, 1),
              "stage_seconds": stages, "second_retrain_seconds": round(second, 1), "second_retrain_ran": ran,
              "floor_dvc_status_seconds": round(status, 1), "floor_empty_prefect_flow_seconds": round(empty_flow, 1),
              "gallery": gallery, "clone": str(clone), "metrics": metrics(clone)}
    out = ROOT / "benchmarks" / "results" / (f"demo-{args.label}.json" if args.label else "demo.json")
    out.parent.mkdir(parents=True, exist_ok=True)  # results/ is git-ignored: absent on a fresh clone
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
