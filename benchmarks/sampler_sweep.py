"""Sweep: `prefgen eval generation` under other sampler settings, same models, pairs and noise.

    .venv/bin/python benchmarks/sampler_sweep.py --root CLONE \
        --setting default: \
        --setting "k=1:sampler.prototype_prompt_weight=1" \
        --setting "k=1, lambda_p 0.2:sampler.prototype_prompt_weight=1,sampler.lambda_pref=0.2"

Each setting is NAME:KEY=VALUE,... (dotted keys into params.yaml, values read as YAML). For each, a
params file is written beside ROOT/params.yaml's content with those overrides, the fused arm alone
(`--arms` to change) and its own `out_dir`/`metrics` under ROOT/data/sweep/NAME/; then
`python -m prefgen eval generation --params P --no-mlflow` runs in ROOT, one setting at a time
(each takes the machine's cores). ROOT is a checkout whose models are trained (`dvc repro
eval_generation` or its upstream stages); its active profile decides pairs and images per segment.
Prints win rate, text consistency (overall and per prompt), utility gain, Fréchet distance and
seconds per image per setting, all of the dev half's pairs (a sweep chooses: prefgen/metrics/dev_test.py);
results go to benchmarks/results/sampler_sweep.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefgen.eval.generation import named_attribute  # noqa: E402
from prefgen.metrics.dev_test import dev_figure  # noqa: E402


def parse_setting(text: str) -> tuple[str, dict[str, object]]:
    """"NAME:a.b=1,c.d=x" -> ("NAME", {"a.b": 1, "c.d": "x"}); values are YAML scalars."""
    name, sep, body = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--setting {text!r}: expected NAME:KEY=VALUE,... (NAME: alone for the params as they are)")
    overrides = {}
    for item in filter(None, body.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--setting {text!r}: {item!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def params_for(base: dict, overrides: dict[str, object], arms: list[str], folder: str) -> dict:
    params = copy.deepcopy(base)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"override {key}: params.yaml has no section {part!r} there")
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"override {key}: params.yaml has no key {leaf!r} there")  # a typo would sweep nothing
        node[leaf] = value
    ev = params["eval_generation"]
    ev["profiles"][params["profile"]]["arms"] = arms
    ev["out_dir"], ev["metrics"] = f"{folder}/generation", f"{folder}/eval_generation.json"
    return params


def per_prompt_consistency(images: pl.DataFrame) -> dict[str, float]:
    """Per prompt, the share of the fused arm's dev images that show what the prompt names."""
    rows = images.filter((pl.col("arm") == "fused") & (pl.col("half") == "dev"))
    out = {}
    for prompt in rows["prompt"].unique(maintain_order=True):
        attribute, value = named_attribute(prompt)
        out[prompt] = float((rows.filter(pl.col("prompt") == prompt)[attribute] == value).mean())
    return out


def run_setting(root: Path, base: dict, name: str, overrides: dict, arms: list[str]) -> dict:
    folder = "data/sweep/" + re.sub(r"[^A-Za-z0-9.=-]+", "_", name)
    (root / folder).mkdir(parents=True, exist_ok=True)
    params_path = root / folder / "params.yaml"
    params_path.write_text(yaml.safe_dump(params_for(base, overrides, arms, folder), sort_keys=False))
    print(f"== {name}: {overrides or 'params as they are'}", flush=True)
    subprocess.run([sys.executable, "-m", "prefgen", "eval", "generation", "--params", str(params_path), "--no-mlflow"],
                   cwd=root, check=True)
    metrics = json.loads((root / folder / "eval_generation.json").read_text())
    return setting_result(name, overrides, metrics, pl.read_parquet(root / folder / "generation" / "images.parquet"))


def setting_result(name: str, overrides: dict, metrics: dict, images: pl.DataFrame) -> dict:
    """One setting's row of the sweep from its eval_generation metrics and per-image table: dev figures only."""
    ablation = dev_figure(metrics, "ablation")
    fused = ablation["fused"]
    return {"name": name, "overrides": overrides, "ablation": ablation, "per_prompt_consistency": per_prompt_consistency(images),
            **{k: fused[k] for k in ("win_rate", "text_consistency", "utility_gain", "frechet_oracle")},
            "seconds_per_image": metrics["seconds_per_image"]["fused"]}


def table(results: list[dict]) -> str:
    prompts = list(results[0]["per_prompt_consistency"])
    lines = ["| setting (dev pairs) | win rate [95% CI] | text consistency [95% CI] | per prompt: " + ", ".join(prompts)
             + " | utility gain | Fréchet | s/image |", "|---|---|---|---|---:|---:|---:|"]
    for r in results:
        f = r["ablation"]["fused"]
        lines.append(f"| {r['name']} | {f['win_rate']:.3f} [{f['win_rate_ci_low']:.3f}, {f['win_rate_ci_high']:.3f}] | "
                     f"{f['text_consistency']:.3f} [{f['text_consistency_ci_low']:.3f}, {f['text_consistency_ci_high']:.3f}] | "
                     + " ".join(f"{v:.2f}" for v in r["per_prompt_consistency"].values())
                     + f" | {f['utility_gain']:.2f} | {f['frechet_oracle']:.1f} | {r['seconds_per_image']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a checkout with the models trained")
    parser.add_argument("--setting", action="append", required=True, help="NAME:KEY=VALUE,... (repeatable)")
    parser.add_argument("--arms", nargs="+", default=["fused"])
    args = parser.parse_args()
    if "fused" not in args.arms:
        raise SystemExit("--arms must include fused (the sweep reports the fused arm)")
    base = yaml.safe_load((args.root / "params.yaml").read_text())
    settings = [parse_setting(s) for s in args.setting]
    if len({re.sub(r"[^A-Za-z0-9.=-]+", "_", name) for name, _ in settings}) < len(settings):
        raise SystemExit("two settings share a name (each gets its own folder under data/sweep/)")
    results = [run_setting(args.root, base, name, overrides, args.arms) for name, overrides in settings]
    print(table(results))
    out = ROOT / "benchmarks" / "results" / "sampler_sweep.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"root": str(args.root), "profile": base["profile"], "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
