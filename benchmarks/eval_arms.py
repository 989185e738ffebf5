"""Benchmark: sampling the evaluation's arms as `prefgen eval generation` does against the old way, same jobs, one run.

    .venv/bin/python benchmarks/eval_arms.py --root CLONE --params CLONE/params.yaml --jobs 32

Old way: each arm alone, every step of it, in this process with `--threads` torch threads.
New way (eval_generation's default): arms that differ only where gradients act compute their
unguided first steps once, and the pipeline calls go to `--workers` spawned processes of
threads // workers threads each (their start, which loads the models, is timed too).
Both sample the same jobs (segment, prompt) from the same noise, images_per_segment images each,
images_per_batch to a call, all of eval_generation's arms. Reports wall seconds per image of all
arms together, the speed-up and the largest pixel difference between the two ways' images.
Results go to benchmarks/results/eval_arms_<profile>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sampling import trained_profile  # noqa: E402  (benchmarks/sampling.py)

from prefgen.config import section_config  # noqa: E402
from prefgen.eval.sample_arms import ARMS, Workers, sample_arms  # noqa: E402
from prefgen.params import load_params
from prefgen.paths import Paths  # noqa: E402
from prefgen.serving.image_sets import machine  # noqa: E402
from prefgen.stages.eval_generation import candidate_segments, pipeline_factory  # noqa: E402


def factory(root: Path, params_path: Path):
    """(a picklable pipeline factory, the sampler config, the eval config, the catalogue, the UNet's training profile)."""
    params = load_params(params_path)
    sampler, ev = section_config(params, "sampler"), section_config(params, "eval_generation")
    paths = Paths.from_params(params).rooted(root)
    make = pipeline_factory(paths, section_config(params, "visual_features"), sampler)
    return make, sampler, ev, paths, trained_profile(paths)


def sample(workers: Workers, arms: dict, jobs: list, ev, shape, together: bool) -> tuple[dict, float]:
    started, images = time.perf_counter(), {}
    for group in ([arms] if together else [{a: g} for a, g in arms.items()]):
        images |= {arm: pixels for arm, pixels, _ in sample_arms(workers, group, jobs, ev.images_per_segment, shape,
                                                                 range(len(jobs)), ev.images_per_batch)}
    return images, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="a project folder whose data/ holds trained models")
    parser.add_argument("--params", type=Path, default=None, help="default: ROOT's params.yaml")
    parser.add_argument("--jobs", type=int, default=32, help="(segment, prompt) image sets per arm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/eval_arms_<profile>.json")
    args = parser.parse_args()
    root = args.root.resolve()
    torch.set_num_threads(args.threads)
    make, sampler, ev, paths, profile = factory(root, args.params or root / "params.yaml")
    local = make()
    segments = candidate_segments(paths.graph, ev.segment_kinds)
    jobs = [(segments[(7 * j) % len(segments)], ev.prompts[j % len(ev.prompts)]) for j in range(args.jobs)]
    arms = {arm: replace(sampler, **ARMS[arm]) for arm in ev.arms}
    old, old_s = sample(Workers(make, 1, args.threads, local=local), arms, jobs, ev, local.latent_shape, together=False)
    with Workers(make, args.workers, args.threads) as workers:
        new, new_s = sample(workers, arms, jobs, ev, local.latent_shape, together=True)
    images = args.jobs * ev.images_per_segment * len(arms)
    result = {"profile": profile, "jobs": args.jobs, "images_per_segment": ev.images_per_segment, "arms": ev.arms,
              "images_per_batch": ev.images_per_batch, "steps": sampler.steps, "threads": args.threads, "workers": args.workers,
              "old_seconds_per_image": old_s / images, "new_seconds_per_image": new_s / images, "speedup": old_s / new_s,
              "max_pixel_difference": max(float((old[a] - new[a]).abs().max()) for a in arms),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "kind": machine()}}
    print(f"\n{profile}: {len(arms)} arms x {args.jobs * ev.images_per_segment} images: each arm alone "
          f"{result['old_seconds_per_image']:.3f} s/image, shared steps + {args.workers} workers "
          f"{result['new_seconds_per_image']:.3f} s/image: {result['speedup']:.2f}x; largest pixel difference "
          f"{result['max_pixel_difference']:.2e}")
    out = args.json or ROOT / "benchmarks" / "results" / f"eval_arms_{profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
