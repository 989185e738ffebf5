"""Stage `synth`: a synthetic social world with ground truth, as raw logs + PNGs.

No public data joins social interactions with pixels, so this world is the
yardstick of Steps 2 and 3 (and of influence in Step 1). What is generated:

- individuals in communities (Dirichlet sizes), each with a taste (tastes.py):
  community centre + personal deviation, with a colour-on-some-shapes interaction;
- a directed follow graph from a degree-corrected stochastic block model:
  heavy-tailed (Pareto) in/out propensities, `homophily` of follows inside the
  community; 3% of follows are later undone (unfollow events);
- activity (reposts, comments, favourites) and clicks, more for central
  individuals (rate ~ sqrt of PageRank), targets chosen by taste with noise;
- groups of 2..50 drawn mostly (85%) from one community, with join/leave events;
  each member's true influence = softmax over the group of
  standardised log-PageRank + a hidden per-individual persuasiveness that no
  feature reveals; the group's taste = influence-weighted mean; group clicks
  drawn from it;
- 64x64 PNGs (render.py) with captions naming their attributes and an owner.

Raw logs go to the `raw` folder in the docs/DATA.md format (one JSONL file per
day), ground truth to the `truth` folder, which only evaluation code reads.
The world's content hash covers every raw file (PNGs by their pixels) and every
truth array; a frozen world (worlds.py) must reproduce its hash exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from scipy import sparse
from tqdm import tqdm

from prefgen.data import render
from prefgen.data.config import SynthConfig
from prefgen.data.tastes import Tastes, community_tastes, individual_tastes, sample_choices, weighted_mean
from prefgen.data.worlds import FrozenWorldError, check_frozen

_END = datetime(2026, 10, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_ACTIVITY = ("repost", "comment", "favorite")


class _Streams:
    """Independent random streams per component, so changing one part leaves the others' draws alone."""

    NAMES = ("images", "communities", "tastes", "graph", "unfollow", "groups", "persuasion", "clicks", "activity",
             "group_clicks", "time")

    def __init__(self, seed: int):
        children = np.random.SeedSequence(seed).spawn(len(self.NAMES))
        for name, child in zip(self.NAMES, children):
            setattr(self, name, np.random.default_rng(child))


@dataclass
class Graph:
    src: np.ndarray  # follower index
    dst: np.ndarray  # followee index
    pagerank: np.ndarray


def follow_graph(rng: np.random.Generator, community: np.ndarray, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Directed DC-SBM edges (follower, followee): heavy-tailed degrees, homophilous targets."""
    n = len(community)
    out_prop = rng.pareto(2.0, n) + 1.0
    in_prop = (rng.pareto(1.6, n) + 1.0) * np.sqrt(out_prop)  # popular accounts tend to follow more too
    out_deg = rng.poisson(cfg.mean_follows * out_prop / out_prop.mean())
    src = np.repeat(np.arange(n), out_deg)
    inside = rng.random(len(src)) < cfg.homophily
    target_comm = np.where(inside, community[src], rng.integers(0, cfg.n_communities, len(src)))
    dst = _weighted_pick(rng, community, in_prop, target_comm)
    keep = src != dst
    pairs = np.unique(np.stack([src[keep], dst[keep]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def pagerank(n: int, src: np.ndarray, dst: np.ndarray, damping: float = 0.85, tol: float = 1e-12) -> np.ndarray:
    """PageRank by power iteration (dangling mass spread uniformly).

    Written out rather than taken from igraph because igraph's result differs in
    the last bits between runs, and the world's truth must be bit-for-bit stable.
    """
    out_deg = np.bincount(src, minlength=n).astype(np.float64)
    transition = sparse.csr_matrix((1.0 / out_deg[src], (dst, src)), shape=(n, n))
    rank = np.full(n, 1.0 / n)
    for _ in range(500):
        dangling = rank[out_deg == 0].sum()
        new = damping * (transition @ rank + dangling / n) + (1 - damping) / n
        if np.abs(new - rank).sum() < tol:
            return new
        rank = new
    return rank


def _weighted_pick(rng: np.random.Generator, groups_of: np.ndarray, weight: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """For each draw, an individual of community draws[k] chosen with probability ~ weight (vectorised)."""
    order = np.argsort(groups_of, kind="stable")
    bounds = np.searchsorted(groups_of[order], np.arange(max(groups_of.max(), draws.max(initial=0)) + 2))
    cum = np.concatenate(([0.0], np.cumsum(weight[order])))
    lo, hi = cum[bounds[draws]], cum[bounds[draws + 1]]
    pos = np.searchsorted(cum, lo + rng.random(len(draws)) * (hi - lo), side="right") - 1
    return order[np.clip(pos, 0, len(order) - 1)]


def make_groups(rng: np.random.Generator, community: np.ndarray, pr: np.ndarray, cfg: SynthConfig):
    """(group index, member index) rows: 85% from the group's home community (popular people join
    more groups), 15% from anywhere; duplicates dropped; every group keeps at least two members."""
    n = len(community)
    sizes = np.clip(np.round(np.exp(rng.normal(1.6, 0.7, cfg.n_groups))), 2, cfg.group_size_max).astype(np.int64)
    home = rng.choice(cfg.n_communities, cfg.n_groups, p=np.bincount(community, minlength=cfg.n_communities) / n)
    from_home = np.round(sizes * 0.85).astype(np.int64)
    g_home = np.repeat(np.arange(cfg.n_groups), from_home)
    g_other = np.repeat(np.arange(cfg.n_groups), sizes - from_home)
    members = np.concatenate([_weighted_pick(rng, community, np.sqrt(pr * n), home[g_home]), rng.integers(0, n, len(g_other))])
    groups = np.concatenate([g_home, g_other])
    pairs = np.unique(groups * n + members)
    groups, members = pairs // n, pairs % n
    lonely = np.flatnonzero(np.bincount(groups, minlength=cfg.n_groups) < 2)
    extra = (members[np.searchsorted(groups, lonely)] + 1 + rng.integers(0, n - 1, len(lonely))) % n
    pairs = np.unique(np.concatenate([pairs, lonely * n + extra]))
    return pairs // n, pairs % n


def influence(groups: np.ndarray, members: np.ndarray, pr: np.ndarray, persuasion: np.ndarray, n_groups: int) -> np.ndarray:
    """Softmax within each group of standardised log-PageRank + hidden persuasiveness."""
    log_pr = np.log(pr)
    z = (log_pr[members] - log_pr.mean()) / log_pr.std() + persuasion[members]
    score = np.exp((z - z.max()) / 0.6)
    total = np.zeros(n_groups)
    np.add.at(total, groups, score)
    return score / total[groups]


class _Hasher:
    """The world's content hash: a sorted manifest of (name, sha256) over raw files, pixels and truth arrays."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {}

    def add(self, name: str, payload: bytes) -> None:
        self.digests[name] = hashlib.sha256(payload).hexdigest()

    def add_array(self, name: str, array: np.ndarray) -> None:
        self.add(name, np.ascontiguousarray(array).tobytes())

    def hexdigest(self) -> str:
        manifest = "\n".join(f"{k}\t{v}" for k, v in sorted(self.digests.items()))
        return hashlib.sha256(manifest.encode()).hexdigest()


class _EventSink:
    """Appends events to one JSONL file per day; ids are `<prefix><n>`, unique per kind."""

    def __init__(self, folder: Path, start_ms: int):
        self.folder, self.start_ms = folder, start_ms
        self.counters: dict[str, int] = {}
        self.by_type: dict[str, int] = {}

    def add(self, prefix: str, ts: np.ndarray, actor: pl.Expr, types: pl.Series | str, target: pl.Expr, frame: pl.DataFrame) -> None:
        first = self.counters.get(prefix, 0)
        self.counters[prefix] = first + frame.height
        events = frame.with_columns(ts=pl.Series(ts, dtype=pl.Int64)).select(
            pl.format(prefix + "{}", pl.int_range(first, first + frame.height)).alias("event_id"), "ts",
            actor.alias("actor_id"), pl.lit(types).alias("type"),
            target.alias("target_id"),
        ).sort("ts", "event_id")
        for t, n in events.group_by("type").len().iter_rows():
            self.by_type[t] = self.by_type.get(t, 0) + n
        for (day,), part in events.with_columns(day=pl.col("ts") // _DAY_MS).partition_by("day", as_dict=True, maintain_order=True).items():
            name = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=int(day))).strftime("events-%Y-%m-%d.jsonl")
            with open(self.folder / name, "ab") as handle:
                part.drop("day").write_ndjson(handle)

    def hash_files(self, hasher: _Hasher) -> None:
        for path in sorted(self.folder.glob("events-*.jsonl")):
            hasher.add(f"raw/{path.name}", path.read_bytes())


def _ids(prefix: str, col: str) -> pl.Expr:
    return pl.format(prefix + "{}", pl.col(col))


def _times(rng: np.random.Generator, n: int, start_ms: int, span_ms: int, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    return start_ms + (span_ms * rng.uniform(lo, hi, n)).astype(np.int64)


def write_images(rng: np.random.Generator, cfg: SynthConfig, owner_weight: np.ndarray, raw: Path, hasher: _Hasher):
    """Render the PNGs and images.jsonl; returns (hue, pattern, shape, owner) index arrays."""
    specs = render.random_specs(rng, cfg.n_images)
    owner = rng.choice(len(owner_weight), cfg.n_images, p=owner_weight / owner_weight.sum())
    (raw / "images").mkdir(parents=True)
    rows = []
    for i, spec in enumerate(tqdm(specs, desc="synth: images", unit=" png", leave=False, disable=None)):
        image = render.render(spec, cfg.image_size)
        name = f"images/img{i}.png"
        image.save(raw / name, format="PNG")
        hasher.add(f"raw/{name}", image.tobytes())
        rows.append({"image_id": f"img{i}", "path": name, "caption": spec.caption, "owner_id": f"u{owner[i]}"})
    buffer = io.BytesIO()
    pl.DataFrame(rows).write_ndjson(buffer)
    (raw / "images.jsonl").write_bytes(buffer.getvalue())
    hasher.add("raw/images.jsonl", buffer.getvalue())
    attrs = np.array([[s.hue, s.pattern, s.shape] for s in specs], dtype=np.int64)
    return attrs[:, 0], attrs[:, 1], attrs[:, 2], owner


def write_follows(streams: _Streams, cfg: SynthConfig, community: np.ndarray, sink: _EventSink, span: int) -> Graph:
    """Follow events (and 3% later undone); returns the final graph with its PageRank."""
    src, dst = follow_graph(streams.graph, community, cfg)
    ts = _times(streams.time, len(src), sink.start_ms, span, 0.0, 0.6)
    edges = pl.DataFrame({"a": src, "b": dst})
    sink.add("f", ts, _ids("u", "a"), "follow", _ids("u", "b"), edges)
    undone = streams.unfollow.random(len(src)) < 0.03
    later = ts[undone] + (span * streams.unfollow.uniform(0.01, 0.3, int(undone.sum()))).astype(np.int64)
    sink.add("x", later, _ids("u", "a"), "unfollow", _ids("u", "b"), edges.filter(pl.Series(undone)))
    src, dst = src[~undone], dst[~undone]
    return Graph(src, dst, pagerank(len(community), src, dst))


def write_memberships(streams: _Streams, cfg: SynthConfig, community: np.ndarray, graph: Graph, sink: _EventSink, span: int):
    """Join events (some members leave and rejoin; some outsiders join then leave); returns final rows."""
    rng = streams.groups
    groups, members = make_groups(rng, community, graph.pagerank, cfg)
    rows = pl.DataFrame({"g": groups, "m": members})
    joined = _times(streams.time, len(groups), sink.start_ms, span, 0.0, 0.5)
    sink.add("j", joined, _ids("u", "m"), "join", _ids("g", "g"), rows)
    churn = rng.random(len(groups)) < 0.05  # leave, then come back: still members
    left = joined[churn] + (span * rng.uniform(0.01, 0.2, int(churn.sum()))).astype(np.int64)
    sink.add("l", left, _ids("u", "m"), "leave", _ids("g", "g"), rows.filter(pl.Series(churn)))
    sink.add("r", left + _DAY_MS, _ids("u", "m"), "join", _ids("g", "g"), rows.filter(pl.Series(churn)))
    n_out = int(0.03 * len(groups))  # passers-by: join, then leave for good
    tourists = pl.DataFrame({"g": rng.integers(0, cfg.n_groups, n_out), "m": rng.integers(0, len(community), n_out)})
    tourists = tourists.join(rows, on=["g", "m"], how="anti", maintain_order="left").unique(maintain_order=True)
    t_join = _times(streams.time, tourists.height, sink.start_ms, span, 0.0, 0.5)
    sink.add("t", t_join, _ids("u", "m"), "join", _ids("g", "g"), tourists)
    sink.add("q", t_join + _DAY_MS, _ids("u", "m"), "leave", _ids("g", "g"), tourists)
    return groups, members


def write_clicks(streams: _Streams, cfg: SynthConfig, tastes: Tastes, activity: np.ndarray, image_class: np.ndarray,
                 sink: _EventSink, span: int) -> None:
    """Clicks and activity of individuals, a chunk of individuals at a time (bounded memory)."""
    n = len(tastes)
    for lo in tqdm(range(0, n, cfg.chunk_individuals), desc="synth: clicks", leave=False, disable=None):
        idx = np.arange(lo, min(n, lo + cfg.chunk_individuals))
        chunk = tastes.take(idx)
        counts = streams.clicks.poisson(cfg.clicks_per_individual * (0.5 + 0.5 * activity[idx]))
        who, img = sample_choices(streams.clicks, chunk, counts, image_class, cfg.taste_temperature, cfg.click_noise)
        frame = pl.DataFrame({"a": idx[who], "b": img})
        sink.add("c", _times(streams.time, frame.height, sink.start_ms, span), _ids("u", "a"), "click", _ids("img", "b"), frame)
        counts = streams.activity.poisson(cfg.activity_per_individual * activity[idx])
        who, img = sample_choices(streams.activity, chunk, counts, image_class, cfg.taste_temperature, cfg.click_noise)
        kind = pl.Series(np.asarray(_ACTIVITY)[streams.activity.integers(0, 3, len(who))])
        frame = pl.DataFrame({"a": idx[who], "b": img})
        sink.add("a", _times(streams.time, frame.height, sink.start_ms, span), _ids("u", "a"), kind, _ids("img", "b"), frame)


def write_truth(truth: Path, hasher: _Hasher, world: dict[str, np.ndarray], cfg: SynthConfig) -> None:
    """Ground truth tables (evaluation code only) and the arrays that enter the content hash."""
    truth.mkdir(parents=True)
    for name in sorted(world):
        hasher.add_array(f"truth/{name}", world[name])
    n = len(world["community"])
    pl.DataFrame({"individual_id": [f"u{i}" for i in range(n)], "community": world["community"],
                  "persuasiveness": world["persuasiveness"], "pagerank": world["pagerank"], "activity": world["activity"],
                  "taste": world["individual_tastes"]}).write_parquet(truth / "individuals.parquet")
    pl.DataFrame({"group_id": [f"g{g}" for g in world["groups"]], "member_id": [f"u{m}" for m in world["members"]],
                  "influence": world["influence"]}).write_parquet(truth / "group_members.parquet")
    pl.DataFrame({"group_id": [f"g{g}" for g in range(cfg.n_groups)], "taste": world["group_tastes"]}).write_parquet(truth / "groups.parquet")
    hue, pattern, shape = world["image_attrs"].T
    pl.DataFrame({"image_id": [f"img{i}" for i in range(len(hue))], "hue": hue, "pattern": pattern, "shape": shape,
                  "hue_name": np.asarray(render.HUES)[hue], "pattern_name": np.asarray(render.PATTERNS)[pattern],
                  "shape_name": np.asarray(render.SHAPES)[shape]}).write_parquet(truth / "images.parquet")


def generate(cfg: SynthConfig, raw: Path, truth: Path) -> tuple[str, dict]:
    """Write the world's raw logs under `raw` and its truth under `truth`; returns (sha256, counts)."""
    streams, hasher = _Streams(cfg.seed), _Hasher()
    span = cfg.days * _DAY_MS
    sink = _EventSink(raw, int((_END - timedelta(days=cfg.days)).timestamp() * 1000))
    raw.mkdir(parents=True)
    sizes = streams.communities.dirichlet(np.full(cfg.n_communities, 3.0))
    community = streams.communities.choice(cfg.n_communities, cfg.n_individuals, p=sizes)
    tastes = individual_tastes(streams.tastes, community, community_tastes(streams.tastes, cfg.n_communities))
    graph = write_follows(streams, cfg, community, sink, span)
    activity = np.sqrt(graph.pagerank * len(community))
    activity /= activity.mean()
    hue, pattern, shape, owner = write_images(streams.images, cfg, activity, raw, hasher)
    groups, members = write_memberships(streams, cfg, community, graph, sink, span)
    persuasion = streams.persuasion.normal(0, 1, cfg.n_individuals)
    weights = influence(groups, members, graph.pagerank, persuasion, cfg.n_groups)
    group_tastes = weighted_mean(tastes, groups, members, weights, cfg.n_groups)
    image_class = (hue * render.N_CLASSES // len(render.HUES)) + pattern * len(render.SHAPES) + shape
    write_clicks(streams, cfg, tastes, activity, image_class, sink, span)
    counts = streams.group_clicks.poisson(cfg.clicks_per_group, cfg.n_groups) + 1
    who, img = sample_choices(streams.group_clicks, group_tastes, counts, image_class, cfg.taste_temperature, cfg.click_noise)
    sink.add("gc", _times(streams.time, len(who), sink.start_ms, span), _ids("g", "a"), "group_click", _ids("img", "b"),
             pl.DataFrame({"a": who, "b": img}))
    sink.hash_files(hasher)
    world = {"community": community, "persuasiveness": persuasion, "pagerank": graph.pagerank, "activity": activity,
             "individual_tastes": tastes.flat(), "groups": groups, "members": members, "influence": weights,
             "group_tastes": group_tastes.flat(), "image_attrs": np.stack([hue, pattern, shape], axis=1),
             "image_owner": owner, "follow_edges": np.stack([graph.src, graph.dst], axis=1)}
    write_truth(truth, hasher, world, cfg)
    return hasher.hexdigest(), {"individuals": cfg.n_individuals, "groups": cfg.n_groups, "images": cfg.n_images,
                                "follows": len(graph.src), "memberships": len(groups), "events": dict(sorted(sink.by_type.items())),
                                "events_total": sum(sink.by_type.values())}


def run(cfg: SynthConfig, raw: Path, truth: Path) -> dict:
    """Generate world `cfg.world` into the folders `raw` (logs, PNGs) and `truth`, replacing them atomically.

    Everything is written to hidden temporary folders beside them first; only a
    world whose hash passes the frozen check is moved into place, so a refused
    or crashed run leaves the previous world untouched.
    """
    for folder, marker in ((raw, "WORLD"), (truth, "world.json")):
        if folder.is_dir() and any(folder.iterdir()) and not (folder / marker).is_file():
            raise FrozenWorldError(f"{folder} holds files but no synthetic world ({marker} missing): synth replaces the whole "
                                   "folder it writes, so give it a folder of its own")
    raw_tmp, truth_tmp = raw.parent / f".{raw.name}.tmp", truth.parent / f".{truth.name}.tmp"
    for tmp in (raw_tmp, truth_tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        sha, counts = generate(cfg, raw_tmp, truth_tmp)
        frozen = check_frozen(cfg.world, sha)
        info = {"world": cfg.world, "world_sha256": sha, "frozen": frozen, "config": asdict(cfg), **counts}
        (truth_tmp / "world.json").write_text(json.dumps(info, indent=2) + "\n")
        (raw_tmp / "WORLD").write_text(f"{cfg.world} {sha}\n")  # so anyone holding the logs can name the world
        for tmp, final in ((raw_tmp, raw), (truth_tmp, truth)):
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
    finally:
        for tmp in (raw_tmp, truth_tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return {k: v for k, v in info.items() if k != "config"}
