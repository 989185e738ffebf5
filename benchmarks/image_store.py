"""Benchmark: writing image stores of three sizes and streaming one epoch of each through a DataLoader.

    .venv/bin/python benchmarks/image_store.py                                # 2k, 8k, 32k images at 64 px
    .venv/bin/python benchmarks/image_store.py --sizes 1000,4000 --json /tmp/s.json

Images: 256 seeded random RGB PNGs, each named by many image ids (every id is decoded on its own, so the
writer does a real store's work; the disk holds 256 files). Each store is written by `write_image_store` into
a temporary folder, and its train split (90% of the ids) is streamed once through `epoch_loader` at batch 256,
each image turned into float pixels as a trainer would, in a fresh subprocess per measurement: workers 0, 1
and 2 with the store's positional reads, and workers 0 reading the same shards through `np.load(mmap_mode="r")`
for comparison. Peak RSS is the largest sum of the RSS of the process and its DataLoader workers, sampled by
psutil every 10 ms; RSS counts the pages forked workers share with the parent (torch's libraries) once per
process, so peak PSS (each shared page divided among its sharers, read from /proc/<pid>/smaps_rollup every
200 ms and every 8 batches) is given beside it. "Added" subtracts what the process held before the store was
opened (Python, torch, polars). The growth lines are least-squares fits of added peak memory against the
number of train images. Results are printed and written to benchmarks/results/image_store.json.

What can grow with the store while streaming it: the sampler's permutation (a list of ints, about 36 bytes an
image) and one entry per shard; every other buffer is per batch. Memory-mapped shards instead add every page an
epoch touches, the whole split, to the resident set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DISTINCT_FILES = 256
BATCH = 256
SEED = 0
MB = 2**20


def synthetic_world(folder: Path, n_images: int, size: int) -> tuple[Path, Path, Path]:
    """(tables, prepared folder, split file) of n_images ids over DISTINCT_FILES random PNGs, prepared at `size` as
    stage prepare_images would; 90% train, 10% val."""
    import polars as pl
    from PIL import Image

    from prefgen.data import contract as c
    from prefgen.vision.prepare import prepare_images

    rng = np.random.default_rng(SEED)
    raw, tables = folder / "raw", folder / "tables"
    (raw / "images").mkdir(parents=True, exist_ok=True), tables.mkdir(parents=True, exist_ok=True)
    for k in range(DISTINCT_FILES):
        path = raw / "images" / f"{k:03d}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    ids = [f"img{k:07d}" for k in range(n_images)]
    pl.DataFrame({"image_id": ids, "path": [f"images/{k % DISTINCT_FILES:03d}.png" for k in range(n_images)],
                  "caption": [""] * n_images, "owner_id": [None] * n_images, "source": ["bench"] * n_images,
                  "line": list(range(n_images))}, schema_overrides={"owner_id": pl.String}).write_parquet(tables / c.IMAGES_FILE)
    splits = ["val" if k % 10 == 0 else "train" for k in range(n_images)]
    pl.DataFrame({"image_id": ids, "split": splits}).write_parquet(folder / "split.parquet")
    prepare_images(raw, tables / c.IMAGES_FILE, folder / "prepared", size, log=lambda _: None)
    return tables, folder / "prepared", folder / "split.parquet"


def proportional_set_size(pid: int) -> int:
    """PSS: the process's resident pages, each page shared with n processes counted 1/n (forked workers share torch)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))


class PeakMemory:
    """The largest RSS, and PSS, of this process plus its children, sampled on a thread (PSS less often: it is slow to read)."""

    def __init__(self, interval: float = 0.01, pss_every: int = 20):
        import psutil

        self.process, self.interval, self.pss_every = psutil.Process(), interval, pss_every
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def processes(self) -> list:
        return [self.process, *self.process.children(recursive=True)]

    def now(self, pss: bool = False) -> int:
        total = 0
        for process in self.processes():
            try:
                total += proportional_set_size(process.pid) if pss else process.memory_info().rss
            except Exception:  # noqa: BLE001 - a worker that just exited has nothing left to count
                pass
        return total

    def sample(self, pss: bool) -> None:
        self.peak_rss = max(self.peak_rss, self.now())
        if pss:
            self.peak_pss = max(self.peak_pss, self.now(pss=True))

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.sample(pss=tick % self.pss_every == 0)
            tick += 1
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(pss=True)


def mmap_dataset(dataset):
    """The same rows read through numpy memory maps of the shards (what `ShardDataset` avoids)."""
    import torch

    maps = {}

    class Mapped(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, index: int):
            shard, row = divmod(int(index), dataset.shard_rows)
            if shard not in maps:
                maps[shard] = np.load(dataset.shards[shard][0], mmap_mode="r")
            return torch.from_numpy(np.array(maps[shard][row])), index

    return Mapped()


def measure(store_dir: Path, workers: int, reader: str) -> dict:
    """One epoch of the train split in this (fresh) process: images/s and RSS."""
    import torch

    from prefgen.training.data import epoch_loader
    from prefgen.vision.image_store import ImageStore

    torch.set_num_threads(1)
    with PeakMemory() as memory:
        baseline, baseline_pss = memory.now(), memory.now(pss=True)
        dataset = ImageStore(store_dir).dataset("train")
        dataset = mmap_dataset(dataset) if reader == "mmap" else dataset
        started, checksum, batches = time.perf_counter(), 0.0, 0
        for images, _ in epoch_loader(dataset, BATCH, seed=SEED, epoch=0, workers=workers):
            checksum += float(images.float().div_(255).mean())
            batches += 1
            if batches % 8 == 0:
                memory.sample(pss=True)  # mid-epoch, while every worker is alive
        seconds = time.perf_counter() - started
    return {"images": len(dataset), "workers": workers, "reader": reader, "seconds": seconds,
            "images_per_s": len(dataset) / seconds, "baseline_rss_mb": baseline / MB, "peak_rss_mb": memory.peak_rss / MB,
            "added_rss_mb": (memory.peak_rss - baseline) / MB, "added_pss_mb": (memory.peak_pss - baseline_pss) / MB,
            "checksum": checksum}


def in_subprocess(store_dir: Path, workers: int, reader: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", str(store_dir), "--workers", str(workers), "--reader", reader],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth(rows: list[dict], key: str) -> dict:
    """Least-squares line of `key` (MB) against images, per 1000 images."""
    x = np.array([r["images"] for r in rows], dtype=float) / 1000
    y = np.array([r[key] for r in rows])
    slope, intercept = np.polyfit(x, y, 1)
    return {"mb_per_1k_images": float(slope), "mb_at_0": float(intercept), "spread_mb": float(y[-1] - y[0])}


def run(sizes: list[int], size: int, workers: list[int], tmp: Path) -> dict:
    from prefgen.vision.image_store import write_image_store

    rows, writes = [], []
    for n in sizes:
        world = synthetic_world(tmp / f"world-{n}", n, size)
        started = time.perf_counter()
        manifest = write_image_store(*world, size, tmp / f"store-{n}")
        seconds = time.perf_counter() - started
        store_mb = sum(p.stat().st_size for p in (tmp / f"store-{n}").rglob("*.npy")) / MB
        writes.append({"images": n, "seconds": seconds, "images_per_s": n / seconds, "store_mb": store_mb,
                       "shard_rows": manifest["shard_rows"]})
        for w in workers:
            rows.append(in_subprocess(tmp / f"store-{n}", w, "pread") | {"store_mb": store_mb})
        rows.append(in_subprocess(tmp / f"store-{n}", 0, "mmap") | {"store_mb": store_mb})
        print(f"  {n} images done", file=sys.stderr)
    fits = {f"{reader}, {w} workers, {key[6:9]}": growth([r for r in rows if r["reader"] == reader and r["workers"] == w], key)
            for reader, w in [("pread", w) for w in workers] + [("mmap", 0)] for key in ("added_rss_mb", "added_pss_mb")}
    return {"image_size": size, "batch_size": BATCH, "writes": writes, "epochs": rows, "growth": fits,
            "store_mb_per_1k_images": 1000 * 3 * size * size / MB, "cpus": os.cpu_count(), "python": platform.python_version()}


def report(result: dict) -> None:
    print(f"\nImage store at {result['image_size']} px, batch {result['batch_size']}, {result['cpus']} CPUs\n")
    print(f"{'images':>7} {'store MB':>9} {'write s':>8} {'write img/s':>12}")
    for w in result["writes"]:
        print(f"{w['images']:>7} {w['store_mb']:>9.1f} {w['seconds']:>8.1f} {w['images_per_s']:>12.0f}")
    print(f"\n{'train imgs':>10} {'reader':>6} {'workers':>7} {'img/s':>8} {'base RSS':>9} {'peak RSS':>9} "
          f"{'added RSS':>10} {'added PSS':>10}   (MB)")
    for r in result["epochs"]:
        print(f"{r['images']:>10} {r['reader']:>6} {r['workers']:>7} {r['images_per_s']:>8.0f} {r['baseline_rss_mb']:>9.0f} "
              f"{r['peak_rss_mb']:>9.0f} {r['added_rss_mb']:>10.1f} {r['added_pss_mb']:>10.1f}")
    print(f"\nGrowth of added peak memory (least squares), against the store's own "
          f"{result['store_mb_per_1k_images']:.1f} MB per 1k images:")
    for name, fit in result["growth"].items():
        print(f"  {name:<22} {fit['mb_per_1k_images']:+7.2f} MB per 1k images  ({fit['mb_at_0']:+.0f} MB at 0; "
              f"{fit['spread_mb']:.0f} MB between the smallest and largest store)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,8000,32000")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "image_store.json")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reader", default="pread", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, int(args.workers), args.reader)))
        return
    with tempfile.TemporaryDirectory(prefix="image-store-bench-") as tmp:
        sizes, workers = [int(s) for s in args.sizes.split(",")], [int(w) for w in args.workers.split(",")]
        result = run(sizes, args.image_size, workers, Path(tmp))
    report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["growth"]))


if __name__ == "__main__":
    main()
