"""Benchmark: the six centrality features, prefgen (igraph + numpy) against networkx.

    .venv/bin/python benchmarks/centrality.py                       # 10k, 100k, 1M nodes
    .venv/bin/python benchmarks/centrality.py --sizes 10000,100000 --json /tmp/c.json

Graphs: seeded directed Chung-Lu graphs (the expected-degree configuration
model) with Pareto weights, heavier-tailed for followers (shape 1.5: a few
accounts followed by a large share of everyone) than for followees (shape 2.5),
10 edges per node on average; duplicates and self-loops removed, then exactly
10n edges kept.

Both sides run the same algorithms with the same sample counts, in this one
invocation, one after the other: in/out degree; PageRank (damping 0.85);
betweenness from 256 sampled sources (networkx: betweenness_centrality(k=256,
normalized=False)); harmonic closeness from 256 sampled sources (networkx: one
single_source_shortest_path_length per pivot of the same draw as its
betweenness, scaled as prefgen scales); core numbers of the undirected graph.
Each side's "graph" row is the time to build its graph object, prefgen's
"setup" row its edge dedupe, pivot draw and relabelling; totals include both. networkx runs only where it finishes in minutes (<= 100k nodes); at 1M it
is skipped. Results are printed and written to benchmarks/results/centrality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefgen.social.centrality import FEATURES, individual_features  # noqa: E402
from prefgen.social.config import CentralityConfig  # noqa: E402

PIVOTS = 256
SEED = 0
NETWORKX_MAX_NODES = 100_000  # networkx finishes in minutes here; at 1M it would take hours
ROWS = ("setup", "graph", *FEATURES)  # setup: prefgen's edge dedupe, pivot draw and relabelling


def heavy_tailed_graph(n: int, avg_degree: int = 10, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = n * avg_degree

    def draw(shape: float, size: int) -> np.ndarray:
        cdf = np.cumsum(rng.pareto(shape, n) + 1.0)
        return np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")

    size = int(m * 1.3)
    src, dst = draw(2.5, size), draw(1.5, size)
    keep = src != dst
    key = np.sort(src[keep].astype(np.int64) * n + dst[keep])
    key = key[np.r_[True, key[1:] != key[:-1]]]
    key = np.sort(key[rng.choice(key.size, min(m, key.size), replace=False)])
    return key // n, key % n


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the forked betweenness workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_prefgen(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[dict[str, float], dict[str, float], dict]:
    """(wall seconds, CPU seconds, features). CPU shows what ran in parallel, and what a
    machine shared with other jobs hides: on an idle machine wall ~ CPU / cores used."""
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    last = [cpu_seconds()]

    def on_feature(name: str, wall: float) -> None:
        now = cpu_seconds()
        seconds[name], cpu[name], last[0] = wall, now - last[0], now
        print(f"    prefgen  {name:<12} {wall:9.2f} s   cpu {cpu[name]:8.2f} s", flush=True)

    cfg = CentralityConfig(pivots=PIVOTS, seed=SEED, threads=2)
    started = time.perf_counter()
    features = individual_features(src, dst, n, cfg, on_feature=on_feature)
    seconds["setup"] = time.perf_counter() - started - sum(seconds.values())
    # Setup runs before the first feature (in_degree) in one thread: move its time out of that row.
    cpu["setup"] = min(seconds["setup"], cpu["in_degree"])
    cpu["in_degree"] -= cpu["setup"]
    return {r: seconds[r] for r in ROWS}, {r: cpu[r] for r in ROWS}, features


def run_networkx(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    import networkx as nx

    seconds: dict[str, float] = {}
    out: dict[str, dict] = {}

    def timed(name, fn):
        started = time.perf_counter()
        out[name] = fn()
        seconds[name] = time.perf_counter() - started
        print(f"    networkx {name:<12} {seconds[name]:9.2f} s", flush=True)

    g = nx.DiGraph()
    seconds["setup"] = 0.0
    timed("graph", lambda: (g.add_nodes_from(range(n)), g.add_edges_from(zip(src.tolist(), dst.tolist(), strict=True))))
    pivots = random.Random(SEED).sample(list(g.nodes()), PIVOTS)  # the draw betweenness_centrality(seed=SEED) makes
    timed("in_degree", lambda: dict(g.in_degree()))
    timed("out_degree", lambda: dict(g.out_degree()))
    timed("pagerank", lambda: nx.pagerank(g, alpha=0.85))
    timed("betweenness", lambda: nx.betweenness_centrality(g, k=PIVOTS, normalized=False, seed=SEED))
    timed("harmonic", lambda: sampled_harmonic(nx, g, pivots))
    timed("kcore", lambda: nx.core_number(g.to_undirected()))
    arrays = {f: np.array([out[f][v] for v in range(n)], dtype=np.float64) for f in FEATURES}
    return {r: seconds[r] for r in ROWS}, arrays


def sampled_harmonic(nx, g, pivots: list[int]) -> dict[int, float]:
    n, k = len(g), len(pivots)
    h = dict.fromkeys(g, 0.0)
    for p in pivots:
        for v, d in nx.single_source_shortest_path_length(g, p).items():
            if d:
                h[v] += 1.0 / d
    chosen = set(pivots)
    return {v: h[v] * ((n - 1) / (k - 1) if v in chosen else (n - 1) / k) for v in g}


def agreement(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, float]:
    """Exact features: max abs difference. Sampled ones (different pivot draws): Spearman rho."""
    from scipy.stats import spearmanr

    out = {f: float(np.abs(ours[f] - theirs[f]).max()) for f in ("in_degree", "out_degree", "pagerank", "kcore")}
    out |= {f"{f}_spearman": float(spearmanr(ours[f], theirs[f]).statistic) for f in ("betweenness", "harmonic")}
    return out


def print_table(n: int, m: int, ours: dict[str, float], cpu: dict[str, float], theirs: dict[str, float] | None) -> None:
    print(f"\n{n:,} nodes, {m:,} edges, {PIVOTS} pivots, load average {os.getloadavg()[0]:.1f}"
          + ("" if theirs else "  (networkx skipped: hours at this size)"))
    print(f"  {'feature':<12} {'prefgen s':>10} {'(cpu s)':>9} {'networkx s':>11} {'ratio':>8}")
    for row in (*ROWS, "total"):
        a, a_cpu = (sum(ours.values()), sum(cpu.values())) if row == "total" else (ours[row], cpu[row])
        b = (sum(theirs.values()) if row == "total" else theirs[row]) if theirs else None
        ratio = f"{b / a:7.1f}x" if b and a > 0 else "       -"
        print(f"  {row:<12} {a:10.2f} {a_cpu:9.2f} {(f'{b:11.2f}' if b is not None else '          -')} {ratio}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated node counts")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "centrality.json")
    args = parser.parse_args()
    results = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "pivots": PIVOTS, "load_avg_start": os.getloadavg(), "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        src, dst = heavy_tailed_graph(n)
        print(f"[{n:,} nodes] prefgen ...", flush=True)
        load = os.getloadavg()[0]
        ours, our_cpu, our_values = run_prefgen(n, src, dst)
        entry = {"nodes": n, "edges": int(src.size), "load_avg_before": load, "prefgen": ours,
                 "prefgen_total": sum(ours.values()), "prefgen_cpu": our_cpu, "prefgen_cpu_total": sum(our_cpu.values())}
        theirs = None
        if n <= NETWORKX_MAX_NODES:
            print(f"[{n:,} nodes] networkx ...", flush=True)
            theirs, their_values = run_networkx(n, src, dst)
            entry |= {"networkx": theirs, "networkx_total": sum(theirs.values()),
                      "ratio_total": sum(theirs.values()) / sum(ours.values()),
                      "ratio": {r: theirs[r] / ours[r] for r in ROWS if ours[r] > 0 and theirs[r] > 0},
                      "agreement": agreement(our_values, their_values)}
            print(f"  agreement: {json.dumps(entry['agreement'])}", flush=True)
        else:
            entry["networkx"] = f"skipped: more than {NETWORKX_MAX_NODES:,} nodes"
        results["sizes"][str(n)] = entry
        print_table(n, int(src.size), ours, our_cpu, theirs)
    results["load_avg_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
