"""Every arm's image sets for `prefgen eval generation`: batched, sharing unguided steps, over worker processes.

Every arm samples the same jobs ((segment, prompt) image sets) from the same starting noise, job j
from the noise of its own seed `seeds[j]`, whatever the batch or the worker. Arms whose classifier-free guidance is
the same (all but `none`) compute identical steps until the first step where a gradient guide acts:
those steps run once and each arm continues from their latents (the pipeline's start_step /
stop_step), with the same images as if it ran alone. The pipeline calls go to `workers` spawned
processes with threads // workers torch threads each: most ops of these small models split badly
over threads, so on 2 cores two one-thread workers sample more images per second than one process
with two threads (BENCHMARKS.md, "Step 3b", "How the sampler and its settings were chosen").
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm import tqdm

from prefgen.generation.config import GuidanceConfig
from prefgen.generation.sampling import PreferenceDiffusionPipeline, guided

ARMS: dict[str, dict[str, float]] = {  # how each guidance ablation departs from params `sampler`
    "none": {"text_scale": 1.0, "pref_scale": 1.0, "lambda_pref": 0.0, "lambda_text": 0.0},
    "cfg": {"lambda_pref": 0.0, "lambda_text": 0.0},
    "text_grad": {"lambda_pref": 0.0},
    "pref_grad": {"lambda_text": 0.0},
    "fused": {},
}


@dataclass(frozen=True)
class Call:
    """One pipeline call: a batch of jobs under one guidance, over DDIM steps [start_step, stop_step)."""

    guidance: GuidanceConfig
    segments: tuple[str, ...]
    prompts: tuple[str, ...]
    n: int  # images per job
    latents: Tensor  # (len(segments) * n, *latent_shape): the starting noise, or where an earlier call stopped
    start_step: int = 0
    stop_step: int | None = None  # None: to the end, and decode to pixels


def _call(pipe: PreferenceDiffusionPipeline, call: Call) -> tuple[Tensor, float]:
    """The call's images (or latents) on the CPU, whatever device the pipeline samples on: they go back across
    processes and on to the oracle and numpy, and latents moved there and back keep every bit."""
    started = time.perf_counter()
    pipe.guidance = call.guidance
    out = pipe(list(call.segments), list(call.prompts), n=call.n, latents=call.latents,
               start_step=call.start_step, stop_step=call.stop_step)
    return out.cpu(), time.perf_counter() - started


_WORKER_PIPE: PreferenceDiffusionPipeline | None = None  # one per worker process, built once


def _start_worker(make_pipe: Callable[[], PreferenceDiffusionPipeline], threads: int) -> None:
    global _WORKER_PIPE
    torch.set_num_threads(threads)
    _WORKER_PIPE = make_pipe()


def _worker_call(call: Call) -> tuple[Tensor, float]:
    return _call(_WORKER_PIPE, call)


class Workers:
    """Runs pipeline calls in the order they are queued: in this process (workers = 1, on `local` if given) or in
    `workers` spawned processes, each building its pipeline with `make_pipe` (which must pickle: a module-level
    function or a functools.partial of one) and using threads // workers torch threads (at least one)."""

    def __init__(self, make_pipe: Callable[[], PreferenceDiffusionPipeline], workers: int = 1, threads: int = 1,
                 local: PreferenceDiffusionPipeline | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers, self.executor, self.local = workers, None, local
        if workers == 1:
            self.local = local or make_pipe()
            return
        try:
            pickle.dumps(make_pipe)
        except Exception as error:
            raise ValueError(f"worker processes need a picklable pipeline factory, not {make_pipe!r}: {error}") from None
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=(make_pipe, max(1, threads // workers)))

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_exc) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)

    def submit(self, calls: list[Call]) -> list:
        """Queue `calls` behind those already queued (in a worker pool; in this process they run when collected)."""
        return [self.executor.submit(_worker_call, c) for c in calls] if self.executor else list(calls)

    def collect(self, queued: list, desc: str) -> list[tuple[Tensor, float]]:
        """(output, seconds the call took in its worker) per queued call, in order, with a progress bar."""
        results = []
        with tqdm(total=len(queued), desc=desc, unit="batch") as progress:
            for item in queued:
                results.append(item.result() if self.executor else _call(self.local, item))
                progress.update(1)
        return results


def first_guided_step(guidance: GuidanceConfig) -> int:
    """The index of the first DDIM step where a gradient guide acts (`steps` where none ever does)."""
    return next((i for i in range(guidance.steps) if guided(guidance, i)), guidance.steps)


def shared_starts(arms: dict[str, GuidanceConfig]) -> list[tuple[list[str], int]]:
    """Groups of two or more arms that compute their first `steps` steps exactly alike, with that number: their
    settings agree except where gradient guidance acts, up to the group's earliest guided step (the last step is
    always each arm's own)."""
    groups = defaultdict(list)
    for name, guidance in arms.items():
        groups[replace(guidance, lambda_pref=0.0, lambda_text=0.0, guide_from=0.0, guide_until=0.0,
                       quantize_output=True)].append(name)
    found = []
    for names in groups.values():
        steps = min(min(first_guided_step(arms[a]) for a in names), arms[names[0]].steps - 1)
        if len(names) > 1 and steps > 0:
            found.append((names, steps))
    return found


def sample_arms(workers: Workers, arms: dict[str, GuidanceConfig], jobs: list[tuple[str, str]], n: int,
                latent_shape: tuple[int, ...], seeds: Sequence[int], per_batch: int) -> Iterator[tuple[str, Tensor, float]]:
    """Per arm, in order: (arm, images (J, n, 3, H, W), worker-seconds its images cost, shared steps included).
    Job j starts from the noise of `seeds[j]`; `per_batch` images go to a call (at least one job)."""
    if len(seeds) != len(jobs):
        raise ValueError(f"one noise seed per job: {len(seeds)} seeds for {len(jobs)} jobs")
    noise = torch.stack([torch.randn((n, *latent_shape), generator=torch.Generator().manual_seed(seed)) for seed in seeds])
    per_call = max(1, per_batch // n)
    batches = [(tuple(s), tuple(p), noise[i : i + per_call].flatten(0, 1))
               for i in range(0, len(jobs), per_call) for s, p in [zip(*jobs[i : i + per_call])]]
    # Everything is queued as soon as its input exists, so that no worker waits between arms or while this
    # process reads an arm's images: 1. the shared first steps of each group, then the arms that share none;
    # 2. each group's arms, once its latents are back; 3. every arm's images, in order.
    groups = [(names, steps, workers.submit([Call(arms[names[0]], s, p, n, z, stop_step=steps) for s, p, z in batches]))
              for names, steps in shared_starts(arms)]
    queued = {arm: (workers.submit([Call(guidance, s, p, n, z) for s, p, z in batches]), 0.0)
              for arm, guidance in arms.items() if not any(arm in names for names, _, _ in groups)}
    for names, steps, begun in groups:
        done = workers.collect(begun, f"sampling steps 1-{steps} [{', '.join(names)}]")
        shared_seconds = sum(t for _, t in done)
        queued |= {a: (workers.submit([Call(arms[a], s, p, n, latents, start_step=steps)
                                       for (s, p, _), (latents, _) in zip(batches, done)]), shared_seconds) for a in names}
    for arm in arms:
        calls, shared_seconds = queued.pop(arm)
        done = workers.collect(calls, f"sampling [{arm}]")
        yield arm, torch.cat([images for images, _ in done]).unflatten(0, (len(jobs), n)), sum(t for _, t in done) + shared_seconds
