"""Study: a pipeline folder on growing logs chooses its champion with no hand (issue 40, "tried as a new user would").

    .venv/bin/python benchmarks/growing_logs.py --raw data/01_raw/world-v1 --workdir /tmp/growing --first-days 75

Takes a folder of daily JSONL logs (`events-YYYY-MM-DD.jsonl`, as `synth` writes a world's) with its image catalogue
(`images.jsonl`, paths relative to the folder) and treats it as a platform with no ground truth: `prefgen new` on the
first `--first-days` days, `prefgen retrain`, then the remaining days added to the logs and `prefgen retrain` again.
Nothing is promoted by hand: the gate of the folder (floors, then the comparison with the champion judged again on
the new window) decides. Prints and writes (benchmarks/results/growing-logs[-LABEL].json) each retrain's gate lines,
its test figures and the bundles' aliases.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"eval_holdout": ("hr10", "popularity_hr10", "hr10_minus_popularity_ci_low"),
           "eval_mapper": ("cold_auc", "vbpr_cold_auc"),
           "eval_guidance": ("uplift_over_none", "uplift_over_none_ci_low", "uplift_over_cfg", "text_consistency",
                             "text_consistency_ci_low", "text_chance")}


def prefgen(cwd: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "prefgen", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    (cwd / f"prefgen-{args[0]}-{int(time.time())}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"prefgen {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def figures(folder: Path) -> dict[str, dict[str, float]]:
    out = {}
    for stage, names in FIGURES.items():
        found = json.loads((folder / "data" / "metrics" / f"{stage}.json").read_text())
        out[stage] = {name: found.get("test", {}).get(name) for name in names}
        out[stage] |= {key: value for key, value in found.items() if key.startswith("judge_")}
    return out


def retrain(workdir: Path, folder: Path) -> dict:
    started = time.perf_counter()
    stdout = prefgen(workdir, "retrain", folder.name)
    gate = [line.strip() for line in stdout.splitlines() if re.search(r"gate|BELOW|vs champion|registered bundle", line)]
    return {"seconds": round(time.perf_counter() - started, 1), "gate": gate, "figures": figures(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="daily events-*.jsonl and images.jsonl (a world's raw folder)")
    parser.add_argument("--workdir", type=Path, required=True, help="a new folder for the platform's logs and the pipeline folder")
    parser.add_argument("--first-days", type=int, default=75, help="days of logs the first retrain sees")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    days = sorted(args.raw.glob("events-*.jsonl"))
    logs = args.workdir / "logs"
    logs.mkdir(parents=True)
    for path in days[: args.first_days]:
        shutil.copy(path, logs / path.name)
    shutil.copy(args.raw / "images.jsonl", logs / "images.jsonl")
    prefgen(args.workdir, "new", "platform", "--logs", str(logs), "--images", str(args.raw.resolve()),
            "--catalog", str(logs / "images.jsonl"))
    folder = args.workdir / "platform"
    result = {"first_days": args.first_days, "days": len(days), "retrains": [retrain(args.workdir, folder)]}
    print(json.dumps(result["retrains"][-1], indent=1), flush=True)
    for path in days[args.first_days:]:
        shutil.copy(path, logs / path.name)
    result["retrains"].append(retrain(args.workdir, folder))
    print(json.dumps(result["retrains"][-1], indent=1), flush=True)
    result["bundles"] = prefgen(folder, "bundles")
    print(result["bundles"])
    out = ROOT / "benchmarks" / "results" / (f"growing-logs-{args.label}.json" if args.label else "growing-logs.json")
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
