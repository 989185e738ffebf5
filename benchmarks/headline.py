"""Benchmark: the headline figures, on the test half, as mean and spread over training seeds.

    .venv/bin/python benchmarks/demo.py --keep /tmp/demo --label seeds0        # seed 0: the demo as it ships
    .venv/bin/python benchmarks/headline.py --clone /tmp/demo --seeds 1,2 --label demo

Takes a clone `benchmarks/demo.py --keep` has run (its figures are seed 0's). For each further seed, sets the `seed`
of every training section (TRAINED) in the clone's params.yaml, runs `dvc repro` of the whole pipeline and reads the
FIGURES from each stage's `test` block (the flat value where a stage has no halves). The evaluation sets (split,
segment pairs, noise, negatives) keep their own seeds, so every row is judged on the same test units. Reporting, not
choosing: nothing here picks a setting. Results, per seed and as mean and sample standard deviation, go to
benchmarks/results/headline-LABEL.json and print as a Markdown table. The clone's params.yaml is left at the last
seed: throw the clone away after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.demo import metrics, set_params  # noqa: E402

TRAINED = ("train_graph", "train_clip", "train_mapper", "train_vq", "train_w", "train_diffusion")
FIGURES = (
    "eval_holdout.hr10", "eval_holdout.popularity_hr10", "eval_holdout.hr10_minus_popularity",
    "eval_graph.influence_spearman", "reference.ref_influence_spearman",
    "eval_mapper.cold_auc", "eval_mapper.vbpr_cold_auc",
    "eval_generation.win_rate", "eval_generation.win_rate_ci_low", "eval_generation.win_rate_ci_high",
    "eval_generation.text_consistency", "eval_generation.text_consistency_ci_low", "eval_generation.text_consistency_ci_high",
    "eval_guidance.uplift_over_none", "eval_guidance.uplift_over_cfg", "eval_guidance.text_consistency",
    "train_vq.val_psnr",
)


def test_figure(stage_metrics: dict, key: str) -> float | None:
    """A stage's `test` figure, or its flat one where it has no halves; None where the stage did not write it."""
    node = stage_metrics.get("test", stage_metrics)
    return node.get(key)


def read_row(found: dict[str, dict]) -> dict[str, float | None]:
    return {name: test_figure(found.get(name.split(".")[0], {}), name.split(".", 1)[1]) for name in FIGURES}


def summary(rows: list[dict[str, float | None]]) -> dict[str, dict[str, float]]:
    """{figure: {mean, sd, n}} over the rows that have it (sd 0 with one row)."""
    out = {}
    for name in FIGURES:
        values = [row[name] for row in rows if row.get(name) is not None]
        if values:
            out[name] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    return out


def table(rows: list[dict], result: dict[str, dict[str, float]]) -> str:
    lines = ["| figure (test half) | " + " | ".join(f"seed {row['seed']}" for row in rows) + " | mean ± sd |",
             "|---|" + "---|" * (len(rows) + 1)]
    for name, stats in result.items():
        cells = [f"{row[name]:.4f}" if row.get(name) is not None else "—" for row in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {stats['mean']:.4f} ± {stats['sd']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone", type=Path, required=True, help="a clone benchmarks/demo.py --keep ran (seed 0)")
    parser.add_argument("--seeds", default="1,2", help="further training seeds, comma-separated")
    parser.add_argument("--label", default="", help="write benchmarks/results/headline-LABEL.json")
    args = parser.parse_args()
    os.environ |= {"PATH": f"{args.clone / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}  # dvc.yaml's `python`
    rows = [{"seed": 0, **read_row(metrics(args.clone))}]
    for seed in args.seeds.split(","):
        set_params(args.clone / "params.yaml", [f"{section}.seed={seed}" for section in TRAINED])
        with open(args.clone / f"headline-{seed}.log", "w") as log:
            done = subprocess.run([str(args.clone / ".venv" / "bin" / "python"), "-m", "dvc", "repro"], cwd=args.clone,
                                  stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            sys.exit(f"dvc repro failed at seed {seed}; see {args.clone / f'headline-{seed}.log'}")
        rows.append({"seed": int(seed), **read_row(metrics(args.clone))})
        print(json.dumps(rows[-1]), flush=True)
    result = summary(rows)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.clone, capture_output=True, text=True, check=True).stdout.strip()
    out = ROOT / "benchmarks" / "results" / (f"headline-{args.label}.json" if args.label else "headline.json")
    out.write_text(json.dumps({"commit": commit, "rows": rows, "summary": result}, indent=2) + "\n")
    print(table(rows, result))


if __name__ == "__main__":
    main()
