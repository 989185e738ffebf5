"""Benchmark: figures of the pipeline over seeds and over one setting's values, on a clone the demo ran.

    # seed noise of the demo profile's figures (seed 0 is the clone's own run)
    .venv/bin/python benchmarks/sweep.py --clone /tmp/demo --label seeds --seeds 1,2 \\
        --seeded train_graph,train_mapper,train_vq --targets eval_graph,eval_mapper,train_vq \\
        --figures eval_graph.influence_spearman,eval_mapper.cold_auc,train_vq.val_psnr
    # a setting chosen on validation
    .venv/bin/python benchmarks/sweep.py --clone /tmp/demo --label k --seeds 0,1,2 --seeded train_graph \\
        --grid train_graph.softmax_negatives=0,128,512 --targets train_graph --figures train_graph.val_score

Takes a clone `benchmarks/demo.py --keep` has run. For each value of --grid (if given) and each seed, sets the
`seed` of every --seeded section and the grid's key in the clone's params.yaml, runs `dvc repro` of --targets, and
reads --figures (STAGE.KEY of data/metrics/STAGE.json: of its `dev` block where the stage has dev and test halves, since
a sweep chooses; prefgen/metrics/dev_test.py). Results, with the clone's figures as it was run, go to
benchmarks/results/sweep-LABEL.json. The clone's params.yaml is left at the last row: throw the clone away after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.demo import metrics, set_params  # noqa: E402
from prefgen.metrics.dev_test import dev_figure  # noqa: E402


def figures(clone: Path, names: list[str]) -> dict[str, float]:
    return dev_figures(metrics(clone), names)


def dev_figures(found: dict[str, dict], names: list[str]) -> dict[str, float]:
    """{STAGE.KEY: value} of the stages' metrics `found` ({stage: metrics}), read from dev: a sweep's rows are choices."""
    return {name: dev_figure(found[name.split(".")[0]], name.split(".", 1)[1]) for name in names}


def run_row(clone: Path, settings: list[str], targets: list[str], names: list[str], log: Path) -> dict[str, float]:
    set_params(clone / "params.yaml", settings)
    with open(log, "w") as out:
        done = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-m", "dvc", "repro", *targets], cwd=clone,
                              stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        sys.exit(f"dvc repro {' '.join(targets)} failed with {settings}; see {log}")
    return figures(clone, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone", type=Path, required=True, help="a clone benchmarks/demo.py --keep ran")
    parser.add_argument("--seeds", default="0", help="seeds, comma-separated")
    parser.add_argument("--seeded", default="", help="sections whose `seed` each row sets, comma-separated")
    parser.add_argument("--grid", default="", help="KEY=V1,V2,...: one params key and the values to run")
    parser.add_argument("--targets", required=True, help="dvc stages to reproduce, comma-separated")
    parser.add_argument("--figures", required=True, help="STAGE.KEY metrics to read, comma-separated")
    parser.add_argument("--label", default="", help="write benchmarks/results/sweep-LABEL.json")
    args = parser.parse_args()
    os.environ |= {"PATH": f"{args.clone / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}  # dvc.yaml's `python`
    names, targets = args.figures.split(","), args.targets.split(",")
    key, _, values = args.grid.partition("=")
    result: dict = {"as_run": figures(args.clone, names), "rows": []}
    for value in values.split(",") if key else [None]:
        for seed in args.seeds.split(","):
            settings = [f"{section}.seed={seed}" for section in filter(None, args.seeded.split(","))]
            settings += [f"{key}={value}"] if key else []
            row = {"settings": settings, **run_row(args.clone, settings, targets, names, args.clone / f"sweep-{len(result['rows'])}.log")}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    result["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.clone, capture_output=True, text=True,
                                      check=True).stdout.strip()
    out = ROOT / "benchmarks" / "results" / (f"sweep-{args.label}.json" if args.label else "sweep.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
