"""Scale of Step 1 and Step 2 training on the CPU: seconds per epoch and peak RSS at growing world sizes.

    nice -n 19 .venv/bin/python benchmarks/scale_training.py [--epochs 3] [--largest-epochs 1] [--json OUT]

A random world in memory per size (individuals / groups / images: 10k/1k/2k, 30k/3k/6k, 100k/10k/20k), with
power-law image popularity and group sizes, ~20 clicks per individual and per group, random member features
and 64-d image vectors. Each measurement runs in a fresh subprocess, so its peak RSS is its own:

- whole epochs (--epoch-runs KIND:SIZE): Step 1 through `prefgen.preference.train.train_for` with the full
  softmax and with a sampled softmax (`softmax_negatives`), and Step 2's mapper through
  `prefgen.vision.train_mapper.fit` on random 64+64+256-d features and Step 1-shaped targets;
- timed batches (--batch-runs KIND:SIZE), for Step 1 at sizes whose epochs take too long to run whole: the
  first --batches batches split into propagation and loss, forward and backward (under cProfile), and the
  epoch they project to (seconds per batch times batches per epoch).

Prints the tables and the log-log least-squares slope of each figure against the number of individuals;
--json writes them.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefgen.preference.config import TrainGraphConfig  # noqa: E402
from prefgen.preference.task import EncoderTask, TrainData, _loss, shared_negatives  # noqa: E402
from prefgen.preference.train import train_for  # noqa: E402
from prefgen.training.config import TrainerConfig  # noqa: E402
from prefgen.training.core import Schedule  # noqa: E402
from prefgen.vision.config import TrainMapperConfig  # noqa: E402
from prefgen.vision.train_mapper import MapperData, fit  # noqa: E402

SIZES = [(10_000, 1_000, 2_000), (30_000, 3_000, 6_000), (100_000, 10_000, 20_000)]  # individuals, groups, images
CLICKS = 20  # mean clicks per individual and per group
SAMPLED = 1024  # negatives of the sampled softmax runs
KINDS = {"step1_full": "Step 1, full softmax", "step1_sampled": f"Step 1, sampled softmax k={SAMPLED}",
         "step2_mapper": "Step 2, mapper"}
CPU = TrainerConfig(device="cpu")


def popular_items(rng: np.random.Generator, n_items: int, count: int) -> np.ndarray:
    """`count` image draws with Zipf-like popularity (weight 1 / rank^0.8, ranks shuffled over the ids)."""
    weight = 1.0 / np.arange(1, n_items + 1) ** 0.8
    return rng.permutation(n_items)[rng.choice(n_items, size=count, p=weight / weight.sum())]


def clicks(rng: np.random.Generator, n_ids: int, n_items: int) -> np.ndarray:
    """(id, image) pairs, Poisson(CLICKS) draws per id (at least two), duplicates dropped."""
    counts = np.maximum(rng.poisson(CLICKS, n_ids), 2)
    ids = np.repeat(np.arange(n_ids), counts)
    keys = np.unique(ids * n_items + popular_items(rng, n_items, len(ids)))
    return np.stack([keys // n_items, keys % n_items], axis=1)


def world(n_users: int, n_groups: int, n_items: int, seed: int = 0) -> TrainData:
    """The benchmark's random world: clicks, group clicks, power-law group sizes, member features, image vectors."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(2 + rng.zipf(2.0, n_groups), 50)
    members = np.unique(np.stack([np.repeat(np.arange(n_groups), sizes), rng.integers(0, n_users, sizes.sum())], axis=1), axis=0)
    return TrainData(n_users, n_items, n_groups, clicks(rng, n_users, n_items), clicks(rng, n_groups, n_items), members,
                     rng.normal(size=(len(members), 3)).astype(np.float32),
                     item_features=rng.normal(size=(n_items, 64)).astype(np.float32))


def mapper_data(data: TrainData, seed: int = 0) -> MapperData:
    """Step 2's inputs shaped as Step 1 hands them over: random 384-d features, 64-d targets, 128-d tastes."""
    rng = torch.Generator().manual_seed(seed)
    n_segments, n_val = data.n_users + data.n_groups, 1_000
    positives = np.random.default_rng(seed).integers(0, n_val, (200, 5))
    return MapperData(torch.randn(data.n_items, 384, generator=rng), torch.randn(data.n_items, 64, generator=rng),
                      torch.randn(n_segments, 128, generator=rng), torch.randn(64, 128, generator=rng) / 128 ** 0.5,
                      data.user_items, torch.randn(n_val, 384, generator=rng),
                      [(segment, positives[segment]) for segment in range(200)])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure(kind: str, size: int, epochs: int) -> dict:
    """One measurement, in this process: seconds of each epoch, peak RSS before and after training."""
    data = world(*SIZES[size])
    before = peak_rss_mb()
    if kind == "step2_mapper":
        _, _, history = fit(mapper_data(data), TrainMapperConfig(max_epochs=epochs, patience=epochs), CPU, log=lambda _: None)
    else:
        cfg = TrainGraphConfig(softmax_negatives=SAMPLED if kind == "step1_sampled" else 0, softmax_full_max_items=0)
        _, _, history = train_for(data, cfg, epochs, log=lambda _: None, trainer=CPU)
    return {"kind": kind, "size": size, "users": data.n_users, "groups": data.n_groups, "images": data.n_items,
            "lines": len(data.user_items) + len(data.group_items), "epochs": [row["seconds"] for row in history.epochs],
            "rss_data_mb": before, "rss_peak_mb": peak_rss_mb()}


def timed_phases(task: EncoderTask, batches: int) -> dict[str, float]:
    """Mean seconds per batch of each part of Step 1's step on the first `batches` batches of epoch 0:
    the full-graph propagation forward, the loss forward, the loss's own backward, the rest of the backward."""
    model = task.modules()["encoder"]
    optimizer = torch.optim.Adam(model.parameters(), lr=task.cfg.lr)
    loop = SimpleNamespace(generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    sums = dict.fromkeys(("propagation forward", "loss forward", "loss backward", "propagation backward"), 0.0)
    for k, (user_rows, _) in enumerate(task.batches(0)):
        if k == batches:
            break
        reg = torch.unique(torch.cat([user_rows[:, 0], user_rows[:, 1] + task.data.n_users]))
        started = time.perf_counter()
        emb, _, p_users = model(task.graphs)
        propagated = time.perf_counter()
        loose_p, loose_items = p_users.detach().requires_grad_(), emb["item"].detach().requires_grad_()
        shared = shared_negatives(task.cfg, task.data.n_items, loop)
        loss = _loss(model, loose_p, loose_items, user_rows, None, reg, task.cfg, shared)
        scored = time.perf_counter()
        loss.backward()
        own = time.perf_counter()
        torch.autograd.backward([p_users, emb["item"]], [loose_p.grad, loose_items.grad])
        done = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        for key, seconds in zip(sums, (propagated - started, scored - propagated, own - scored, done - own), strict=True):
            sums[key] += seconds / batches
    return sums


def per_batch(kind: str, size: int, batches: int) -> dict:
    """Step 1's first `batches` batches split into their parts, the epoch they project to, peak RSS and
    cProfile's top functions: for sizes whose whole epochs take too long to run."""
    data = world(*SIZES[size])
    before = peak_rss_mb()
    cfg = TrainGraphConfig(softmax_negatives=SAMPLED if kind == "step1_sampled" else 0, softmax_full_max_items=0)
    task = EncoderTask(data, {}, cfg, Schedule(1), "profile")
    torch.set_num_threads(cfg.threads)
    profiler = cProfile.Profile()
    phases = profiler.runcall(timed_phases, task, batches)
    stats = pstats.Stats(profiler)
    top = sorted(((f"{Path(file).name}:{line}({name})", entry[2]) for (file, line, name), entry in stats.stats.items()),
                 key=lambda item: -item[1])[:8]
    n_batches = len(task.batches(0))
    return {"kind": kind, "size": size, "users": data.n_users, "groups": data.n_groups, "images": data.n_items,
            "lines": len(data.user_items) + len(data.group_items), "batches_timed": batches, "batches_per_epoch": n_batches,
            "phases": phases, "projected_epoch_s": n_batches * sum(phases.values()), "rss_data_mb": before,
            "rss_peak_mb": peak_rss_mb(), "top_self_seconds": top}


def run_one(args: list[str], timeout: float) -> dict | None:
    """A measurement in a fresh interpreter; its JSON line, or None if it ran past `timeout` or failed."""
    try:
        done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x: the exponent of y ~ x^slope."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if y]
    if len(points) < 2:
        return None
    return float(np.polyfit(np.log([x for x, _ in points]), np.log([y for _, y in points]), 1)[0])


def shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def epoch_table(rows: list[dict]) -> list[str]:
    """Whole epochs run through the core: seconds per epoch and peak RSS, and their growth."""
    lines = [f"{'whole epochs':<34}{'individuals':>12}{'groups':>8}{'images':>8}{'lines':>10}{'epochs':>7}{'s/epoch':>10}"
             f"{'peak RSS MiB':>14}"]
    for row in rows:
        per_epoch = f"{np.mean(row['epochs']):.1f}" if row.get("epochs") else "timeout"
        peak = f"{row['rss_peak_mb']:.0f}" if row.get("rss_peak_mb") else "-"
        lines.append(f"{KINDS[row['kind']]:<34}{row['users']:>12}{row['groups']:>8}{row['images']:>8}{row.get('lines', 0):>10}"
                     f"{len(row.get('epochs') or []):>7}{per_epoch:>10}{peak:>14}")
    return lines + growth(rows, lambda r: np.mean(r["epochs"]) if r.get("epochs") else 0.0, "s/epoch")


def batch_table(rows: list[dict]) -> list[str]:
    """Step 1's timed batches: seconds per batch by part, the epoch they project to, peak RSS, and their growth."""
    parts = list(rows[0]["phases"]) if rows else []
    lines = [f"{'Step 1 batches':<34}{'individuals':>12}{'batches/ep':>11}" + "".join(f"{p[:14]:>16}" for p in parts)
             + f"{'s/batch':>9}{'proj. s/ep':>11}{'peak RSS MiB':>14}"]
    for row in rows:
        per_batch = sum(row["phases"].values())
        lines.append(f"{KINDS[row['kind']]:<34}{row['users']:>12}{row['batches_per_epoch']:>11}"
                     + "".join(f"{row['phases'][p]:>9.3f} {row['phases'][p] / per_batch:>5.0%}" for p in parts)
                     + f"{per_batch:>9.3f}{row['projected_epoch_s']:>11.0f}{row['rss_peak_mb']:>14.0f}")
    lines += growth(rows, lambda r: sum(r["phases"].values()), "s/batch")
    lines += growth(rows, lambda r: r["projected_epoch_s"], "projected s/epoch")[1:]
    middle = [r for r in rows if r["size"] == 1 and r["kind"] == "step1_full"]
    if middle:
        lines.append("  cProfile at the middle size, full softmax, top functions by own time: "
                     + "; ".join(f"{n} {s:.2f}s" for n, s in middle[0]["top_self_seconds"][:5]))
    return lines


def growth(rows: list[dict], value, label: str) -> list[str]:
    """Per kind, the log-log least-squares slope of `value` and of peak RSS against the number of individuals."""
    lines = ["growth against the number of individuals (log-log least-squares slope; 1 = linear):"]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        xs = [r["users"] for r in mine]
        lines.append(f"  {KINDS[kind]:<34} {label} slope {shown(slope(xs, [value(r) for r in mine]))}, "
                     f"peak RSS slope {shown(slope(xs, [r.get('rss_peak_mb') or 0.0 for r in mine]))}")
    return lines


def fallback(kind: str, size: int) -> dict:
    users, groups, images = SIZES[size]
    return {"kind": kind, "size": size, "users": users, "groups": groups, "images": images, "epochs": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per whole-epoch measurement (at most 3 is the plan)")
    parser.add_argument("--largest-epochs", type=int, default=None, help="epochs at the largest size (default: --epochs)")
    parser.add_argument("--epoch-runs", nargs="*", default=[f"{k}:{s}" for k in KINDS for s in range(len(SIZES))],
                        help="KIND:SIZE whole-epoch measurements (SIZE an index into the sizes)")
    parser.add_argument("--batch-runs", nargs="*", default=[f"{k}:{s}" for k in list(KINDS)[:2] for s in range(len(SIZES))],
                        help="KIND:SIZE Step 1 timed-batch measurements")
    parser.add_argument("--batches", type=int, default=5, help="batches a timed-batch measurement times")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds a measurement may take")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--measure", choices=list(KINDS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--per-batch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        if args.per_batch:
            print(json.dumps(per_batch(args.measure, args.size, args.batches)))
        else:
            print(json.dumps(measure(args.measure, args.size, args.epochs)))
        return
    epochs, batches = [], []
    for kind, size in (run.split(":") for run in args.epoch_runs):
        n = args.largest_epochs if int(size) == len(SIZES) - 1 and args.largest_epochs else args.epochs
        epochs.append(run_one(["--measure", kind, "--size", size, "--epochs", str(n)], args.timeout) or fallback(kind, int(size)))
        print(epoch_table(epochs[-1:])[1], flush=True)
    for kind, size in (run.split(":") for run in args.batch_runs):
        row = run_one(["--measure", kind, "--size", size, "--per-batch", "--batches", str(args.batches)], args.timeout)
        batches += [row] if row else []
        print(f"{kind}:{size} timed: {shown(row and sum(row['phases'].values()))} s/batch", flush=True)
    lines = (epoch_table(epochs) if epochs else []) + (batch_table(batches) if batches else [])
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sizes": SIZES, "epochs": epochs, "batches": batches, "report": lines}, indent=2))


if __name__ == "__main__":
    main()
