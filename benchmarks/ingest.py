"""Benchmark: ingest of a 10M-event JSONL log, prefgen (polars) against a pandas baseline.

    .venv/bin/python benchmarks/ingest.py                 # 10M events, both sides
    .venv/bin/python benchmarks/ingest.py --events 1000000

Both sides run in the same invocation, each in a fresh subprocess on the same
file, so rows/s and peak memory (the child's max RSS) are comparable. The log
holds 0.1% malformed rows of the kinds a JSON reader can survive (pandas'
`read_json` cannot skip a broken line); both sides must agree on every count.
Results are printed and written to benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefgen.data.samplelog import BAD_KINDS, write_events  # noqa: E402

JSON_SAFE_KINDS = tuple(kind for kind, safe in BAD_KINDS.items() if safe)


def make_log(path: Path, events: int) -> Path:
    if path.is_file():
        return path
    print(f"generating {events:,} events -> {path} (once; reused by later runs)", flush=True)
    write_events(path, events, seed=7, bad_share=0.001, bad_kinds=JSON_SAFE_KINDS,
                 n_ind=max(events // 10, 100), n_grp=max(events // 200, 10), n_img=max(events // 50, 10))
    return path


def child(impl: str, raw_file: Path, out_dir: Path) -> None:
    """Run one side in this process and print its counts, seconds and peak RSS as JSON."""
    from prefgen.data.config import IngestConfig

    shutil.rmtree(out_dir, ignore_errors=True)
    started = time.perf_counter()
    if impl == "prefgen":
        from prefgen.data.ingest import run

        counts = run(IngestConfig(), raw_file.parent, out_dir)
    else:
        from benchmarks.pandas_ingest import run as run_pandas

        counts = run_pandas(IngestConfig(), raw_file, out_dir)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    keys = ("read", "valid", "duplicates", "quarantined")
    print(json.dumps({"impl": impl, "seconds": seconds, "peak_mb": peak_mb, **{k: counts[k] for k in keys}}))


def measure(impl: str, raw_file: Path, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--raw-file", str(raw_file), "--workdir", str(workdir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["read"] / result["seconds"]
    print(f"  {impl:<8} {result['seconds']:8.1f} s  {result['rows_per_s']:>12,.0f} rows/s  peak {result['peak_mb']:,.0f} MB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prefgen-bench-ingest"))
    parser.add_argument("--child", choices=["prefgen", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--raw-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.raw_file, args.workdir / f"out-{args.child}")
        return
    raw_file = make_log(args.workdir / f"raw-{args.events}" / "events.jsonl", args.events)
    print(f"ingest benchmark: {args.events:,} events, {raw_file.stat().st_size / 2**30:.2f} GiB JSONL", flush=True)
    results = {impl: measure(impl, raw_file, args.workdir) for impl in ("prefgen", "pandas")}
    keys = ("read", "valid", "duplicates", "quarantined")
    agree = all(results["prefgen"][k] == results["pandas"][k] for k in keys)
    speedup = results["pandas"]["seconds"] / results["prefgen"]["seconds"]
    summary = {"events": args.events, "speedup": speedup, "counts_agree": agree, "results": results,
               "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "python": platform.python_version()}}
    print(f"  speed-up {speedup:.1f}x; counts agree: {agree}")
    out = ROOT / "benchmarks" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    if not agree:
        sys.exit("prefgen and the pandas baseline disagree on the counts")


if __name__ == "__main__":
    main()
