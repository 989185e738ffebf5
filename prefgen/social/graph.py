"""Graph primitives behind the centrality features (prefgen/social/centrality.py).

- `simple_edges`: the simple directed graph of an edge list (no self-loops, no duplicates).
- `pivot_plan`: which BFS sources each block (a connected part analysed on its own:
  the whole graph, or one group of a disjoint union) uses, and how their sums scale.
- `build_igraph` / `igraph_map`: an igraph graph, and one igraph method run over
  chunks of sources in forked workers (igraph holds the GIL, so threads cannot
  share it; a forked child sees the parent's graph copy-on-write, nothing is pickled
  but the result arrays).
- `multi_source_harmonic`: sum over sources s of 1/d(s, v) by a bit-parallel
  multi-source BFS (Then et al., "The More the Merrier: Efficient Multi-Source
  Graph Traversal", VLDB 2014): up to 512 sources advance together, one 64-bit
  word per 64 sources per node, so one pass over the frontier's edges serves all.
- `pagerank`: power iteration on a scipy CSR matrix (faster than igraph's
  PRPACK here: random-like graphs converge in few iterations).
- `core_numbers`: level-synchronous peeling (Batagelj & Zaversnik's order,
  all nodes of degree <= k removed per round), faster than igraph's
  undirected conversion plus coreness (BENCHMARKS.md, "Centrality against networkx").
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from typing import Any

import igraph as ig
import numpy as np
import scipy.sparse as sp

BATCH = 512  # sources per multi-source BFS batch: 8 words of 64 bits = one cache line per node
EDGE_CHUNK = 1 << 22  # frontier edges gathered at once (bounds the batch's memory)
FORK_MIN_WORK = 20_000_000  # sources x edges below which forking costs more than it saves


def simple_edges(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges as int64 arrays sorted by (src, dst), self-loops and duplicates removed."""
    src = np.asarray(src, dtype=np.int64).ravel()
    dst = np.asarray(dst, dtype=np.int64).ravel()
    if src.shape != dst.shape:
        raise ValueError(f"src and dst differ in length: {src.size} != {dst.size}")
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise ValueError(f"edge endpoints must be node indexes in [0, {n})")
    keep = src != dst
    key = np.sort(src[keep] * np.int64(n) + dst[keep])  # n < 3e9 keeps this in int64
    key = key[np.r_[True, key[1:] != key[:-1]]] if key.size else key
    return key // n, key % n


@dataclass(frozen=True)
class PivotPlan:
    """BFS sources per block and the factor each node's source sum is multiplied by.

    A block of size <= threshold is exact: all its nodes are sources, factor 1.
    A larger block samples k = min(pivots, size) of its nodes uniformly without
    replacement; a node's sum over the k pivots is scaled as networkx scales
    sampled betweenness (`_rescale` with endpoints=False): (size-1)/k for a node
    that is not a pivot, (size-1)/(k-1) for a pivot (0 when k == 1), i.e. the
    unbiased estimate given whether the node itself was drawn.
    """

    sources: np.ndarray  # sorted node indexes
    scale: np.ndarray  # per node
    sampled: np.ndarray  # per node: its block is sampled
    block_start: np.ndarray  # per node: first node of its block (blocks given contiguous)
    block_end: np.ndarray  # per node: one past its block's last node
    sampled_blocks: int
    exact_blocks: int


def pivot_plan(blocks: np.ndarray, threshold: int, pivots: int, seed: int) -> PivotPlan:
    """Sources for every block at once (no loop over blocks), seeded by `seed`."""
    n = blocks.size
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), blocks))  # by block, random inside each
    b = blocks[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]]) if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    size = np.repeat(sizes, sizes)
    sampled = size > threshold
    k = np.where(sampled, np.minimum(pivots, size), size)
    chosen = (np.arange(n) - np.repeat(starts, sizes)) < k
    with np.errstate(divide="ignore", invalid="ignore"):
        pivot_scale = np.where(k > 1, (size - 1) / np.maximum(k - 1, 1), 0.0)
        scale = np.where(sampled, np.where(chosen, pivot_scale, (size - 1) / k), 1.0)
    out_scale, out_sampled = np.empty(n), np.empty(n, dtype=bool)
    out_scale[order], out_sampled[order] = scale, sampled
    first, last = _block_bounds(blocks)
    return PivotPlan(np.sort(order[chosen]), out_scale, out_sampled, first, last,
                     int((sizes > threshold).sum()), int((sizes <= threshold).sum()))


def _block_bounds(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node, the [first, last+1) node range of its block (the whole range if blocks interleave)."""
    n = blocks.size
    if n == 0 or np.all(blocks[1:] >= blocks[:-1]):
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]]) if n else np.zeros(0, np.int64)
        sizes = np.diff(np.r_[starts, n])
        return np.repeat(starts, sizes), np.repeat(starts + sizes, sizes)
    return np.zeros(n, np.int64), np.full(n, n, np.int64)


def build_igraph(n: int, src: np.ndarray, dst: np.ndarray) -> ig.Graph:
    # A list of tuples is igraph's fastest input (a numpy array is read item by item).
    return ig.Graph(n=n, edges=list(zip(src.tolist(), dst.tolist(), strict=True)), directed=True)


_FORKED: dict[str, Any] = {}  # the graph a forked worker reads (set only around a pool)


def _forked_call(job: tuple[str, dict[str, Any]]) -> np.ndarray:
    method, kwargs = job
    return np.asarray(getattr(_FORKED["graph"], method)(**kwargs), dtype=np.float64)


def igraph_map(graph: ig.Graph, method: str, jobs: list[dict[str, Any]], threads: int) -> list[np.ndarray]:
    """`graph.method(**job)` for each job, in up to `threads` forked workers when worth it."""
    work = sum(len(job.get("sources") or job.get("vertices") or ()) for job in jobs) * max(graph.ecount(), 1)
    if threads <= 1 or len(jobs) <= 1 or work < FORK_MIN_WORK or "fork" not in mp.get_all_start_methods():
        return [np.asarray(getattr(graph, method)(**job), dtype=np.float64) for job in jobs]
    _FORKED["graph"] = graph
    try:
        with mp.get_context("fork").Pool(min(threads, len(jobs))) as pool:
            return pool.map(_forked_call, [(method, job) for job in jobs], chunksize=1)
    finally:
        _FORKED.clear()


def chunks(values: np.ndarray, parts: int) -> list[list[int]]:
    """`values` dealt round-robin into at most `parts` non-empty lists (balances cost)."""
    return [values[i::parts].tolist() for i in range(min(parts, values.size))]


def multi_source_harmonic(n: int, src: np.ndarray, dst: np.ndarray, sources: np.ndarray,
                          block_start: np.ndarray, block_end: np.ndarray) -> np.ndarray:
    """h[v] = sum over s in `sources` of 1/d(s, v) (d along edge direction; unreachable adds 0).

    Sources go in batches of 512; a batch only scans the edges inside the node range
    of its sources' blocks (blocks are contiguous node ranges, or one range).
    """
    order = np.argsort(dst, kind="stable")
    in_src, in_dst = src[order], dst[order]
    h = np.zeros(n)
    for start in range(0, sources.size, BATCH):
        batch = sources[start : start + BATCH]
        lo, hi = int(block_start[batch].min()), int(block_end[batch].max())
        a, b = np.searchsorted(in_dst, [lo, hi])
        h += _bit_bfs(n, in_src[a:b], in_dst[a:b], batch)
    return h


def _bit_bfs(n: int, in_src: np.ndarray, in_dst: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """One batch of the multi-source BFS; edges sorted by destination."""
    k = batch.size
    words = (k + 63) // 64
    frontier = np.zeros((n, words), np.uint64)
    frontier[batch, np.arange(k) // 64] = np.left_shift(np.uint64(1), (np.arange(k) % 64).astype(np.uint64))
    seen = frontier.copy()
    active = np.zeros(n, dtype=bool)
    active[batch] = True
    h = np.zeros(n)
    level = 0
    while True:
        level += 1
        hit = np.flatnonzero(active[in_src])
        if hit.size == 0:
            return h
        following = np.zeros_like(frontier)
        for part in range(0, hit.size, EDGE_CHUNK):
            idx = hit[part : part + EDGE_CHUNK]
            nodes, reach = _or_by_destination(in_dst[idx], frontier[in_src[idx]])
            new = reach & ~seen[nodes]
            seen[nodes] |= new
            following[nodes] |= new
            h[nodes] += np.bitwise_count(new).sum(axis=1, dtype=np.int64) / level
        frontier = following
        active = following.any(axis=1)


def _or_by_destination(dst: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bitwise OR of `values` rows per destination (dst sorted): (distinct dst, OR rows)."""
    starts = np.flatnonzero(np.r_[True, dst[1:] != dst[:-1]])
    return dst[starts], np.bitwise_or.reduceat(values, starts, axis=0)


def dense_blocks(blocks: np.ndarray) -> np.ndarray:
    """Block labels renumbered 0..B-1 in sorted label order (by sorting, not hashing)."""
    order = np.argsort(blocks, kind="stable")
    b = blocks[order]
    dense = np.empty(blocks.size, np.int64)
    dense[order] = np.cumsum(np.r_[False, b[1:] != b[:-1]]) if b.size else b
    return dense


def block_sums(values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Per node, the sum of `values` over its block."""
    dense = dense_blocks(blocks)
    return np.bincount(dense, weights=values)[dense]


def pagerank(n: int, src: np.ndarray, dst: np.ndarray, damping: float, tol: float = 1e-13,
             max_iter: int = 10_000) -> np.ndarray:
    """PageRank as networkx defines it: uniform teleport, dangling rank spread uniformly.

    Power iteration until the L1 change is below `tol` (the error then is below
    tol * damping / (1 - damping)).
    """
    if n == 0:
        return np.zeros(0)
    out_degree = np.bincount(src, minlength=n).astype(np.float64)
    walk = sp.csr_matrix((damping / out_degree[src], (dst, src)), shape=(n, n))
    dangling = out_degree == 0
    x = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        following = walk @ x + (damping * x[dangling].sum() + 1.0 - damping) / n
        change = np.abs(following - x).sum()
        x = following
        if change < tol:
            break
    return x


def core_numbers(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Core number of each node of the graph taken as undirected (an edge either way counts once)."""
    indptr, neighbours = _undirected_csr(n, src, dst)
    degree = np.diff(indptr)
    core, alive = np.zeros(n, np.int64), np.ones(n, dtype=bool)
    k, left = 0, n
    peel = np.flatnonzero(degree <= 0)
    while left:
        if peel.size == 0:  # nothing left at degree <= k: the next core level
            k = int(degree[alive].min())
            peel = np.flatnonzero(alive & (degree <= k))
        core[peel], alive[peel] = k, False
        left -= peel.size
        hit = neighbours[_ranges(indptr[peel], indptr[peel + 1])]
        hit = np.sort(hit[alive[hit]])
        starts = np.flatnonzero(np.r_[True, hit[1:] != hit[:-1]]) if hit.size else hit
        touched = hit[starts]
        degree[touched] -= np.diff(np.r_[starts, hit.size])
        peel = touched[degree[touched] <= k]
    return core


def _undirected_csr(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    key = np.sort(np.concatenate([src * np.int64(n) + dst, dst * np.int64(n) + src]))
    key = key[np.r_[True, key[1:] != key[:-1]]] if key.size else key
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(key // n, minlength=n), out=indptr[1:])
    return indptr, key % n


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, e) for each pair (vectorised)."""
    counts = ends - starts
    offsets = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
    return offsets + np.arange(counts.sum())
