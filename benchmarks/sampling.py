"""Benchmark: fused-gradient guided sampling against CFG-only sampling, same model, steps and batch, one run.

    .venv/bin/python benchmarks/sampling.py                          # the trained models under data/, params.yaml's sampler
    .venv/bin/python benchmarks/sampling.py --root /path/to/clone --params params.yaml --batch 8 --repeats 3

Both arms use the `sampler` section of params.yaml; CFG-only sets lambda_pref = lambda_text = 0
(the three-way classifier-free guidance still runs). Runs alternate (cfg, fused, cfg, fused, ...)
from the same seeds, so drift on a shared machine hits both arms alike; one warm-up call of
each arm is not timed. Reports seconds per image of each arm and their ratio (the issue's
budget: guided at most 2.5x CFG-only). Results go to benchmarks/results/sampling_<profile>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefgen.config import section_config  # noqa: E402
from prefgen.params import load_params
from prefgen.paths import Paths  # noqa: E402
from prefgen.serving.image_sets import machine  # noqa: E402
from prefgen.stages.eval_generation import pipeline_factory  # noqa: E402


def trained_profile(paths: Paths) -> str:
    """The profile the UNet was trained with, as its stage recorded it (not params.yaml's current choice)."""
    return json.loads((paths.diffusion / "conditioning.json").read_text())["train_diffusion"]["profile"]


def build(root: Path, params_path: Path):
    params = load_params(params_path)
    sampler, paths = section_config(params, "sampler"), Paths.from_params(params).rooted(root)
    pipe = pipeline_factory(paths, section_config(params, "visual_features"), sampler)()
    return pipe, sampler, trained_profile(paths)


def time_call(pipe, guidance, segment: str, prompt: str, batch: int, seed: int) -> float:
    pipe.guidance = guidance
    started = time.perf_counter()
    pipe(segment, prompt, n=batch, generator=torch.Generator().manual_seed(seed))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="a project folder whose data/ holds trained models")
    parser.add_argument("--params", type=Path, default=None, help="params.yaml for the sampler section (default: ROOT's)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--segment", default="grp:g0")
    parser.add_argument("--prompt", default="a star")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/sampling_<profile>.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe, fused, profile = build(args.root.resolve(), args.params or args.root / "params.yaml")
    arms = {"cfg_only": replace(fused, lambda_pref=0.0, lambda_text=0.0), "fused": fused}
    for guidance in arms.values():  # warm-up: first-call allocations and lazy imports
        time_call(pipe, guidance, args.segment, args.prompt, args.batch, 0)
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(args.repeats):
        for name, guidance in arms.items():
            seconds[name].append(time_call(pipe, guidance, args.segment, args.prompt, args.batch, repeat + 1) / args.batch)
            print(f"repeat {repeat + 1}/{args.repeats} {name:>8}: {seconds[name][-1]:.3f} s/image", flush=True)
    per_image = {name: statistics.median(values) for name, values in seconds.items()}
    result = {"profile": profile, "batch": args.batch, "repeats": args.repeats, "threads": args.threads,
              "sampler": asdict(fused), "seconds_per_image": per_image, "runs": seconds,
              "ratio_fused_over_cfg": per_image["fused"] / per_image["cfg_only"],
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "kind": machine()}}
    print(f"\n{profile}: CFG-only {per_image['cfg_only']:.3f} s/image, fused {per_image['fused']:.3f} s/image, "
          f"ratio {result['ratio_fused_over_cfg']:.2f}x (median of {args.repeats}, batch {args.batch}, {fused.steps} steps)")
    out = args.json or ROOT / "benchmarks" / "results" / f"sampling_{profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
