"""`prefgen bench grouprec`: Step 1 on public group-recommendation data, against popularity.

Protocol (../shared/data/README.md): each test row ranks its held-out positive
among its listed negatives, scored as the model scores them (no masking of
training items), ties broken in expectation (prefgen/metrics/sampled.py). Beside
it, full ranking: the positive against every item the id has not interacted
with in training (Recall@K = HR@K with one positive per row). The
epoch is chosen on a validation split carved from train (per user and per group
as many training lines as test holds for it, at least one, see `test_rows_per_id`;
repeated lines are kept, see `sorted_lines`; where test drew each group's items
from its members' test items, validation does the same, see
`carve_group_validation_from_members`), never on test. Intervals: paired bootstrap over test rows
of (model - popularity), 95%.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from prefgen.metrics.sampled import per_row_metrics, tie_aware_metrics
from prefgen.preference import train as training
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.grouprec import GroupRecData, TestSet, densify, input_report, read_dataset, self_follows
from prefgen.preference.stage_data import standardise_log
from prefgen.preference.task import TrainData, score_all, score_rows
from prefgen.preference.train import carve_validation
from prefgen.social.config import CentralityConfig
from prefgen.training.config import TrainerConfig

TASKS = ("group", "user")
METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")
FULL_METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20")


def load(folder: Path, log=print) -> tuple[GroupRecData, dict]:
    """The dataset with dense ids, and what its input lacks (logged: kept and scored, never silently)."""
    raw = read_dataset(folder)
    report = input_report(raw)
    for name, found in report.items():
        log(f"input: {found['count']} {name} (e.g. {', '.join(map(str, found['examples']))})")
    return densify(raw), report


def full_ranking(scores: np.ndarray, data: GroupRecData, task: str) -> dict[str, float]:
    """The positive against every item the row's id did not interact with in training; ties in expectation."""
    train, test = (data.user_train, data.user_test) if task == "user" else (data.group_train, data.group_test)
    order = np.argsort(train[:, 0], kind="stable")
    ids, items = train[order, 0], train[order, 1]
    scores = scores.astype(np.float64)  # a private copy: masked in place
    rows = np.arange(len(test.ids))
    pos = scores[rows, test.positives].copy()
    for r, i in enumerate(test.ids.tolist()):
        scores[r, items[np.searchsorted(ids, i, "left") : np.searchsorted(ids, i, "right")]] = -np.inf
    scores[rows, test.positives] = -np.inf  # the positive is not its own competitor
    metrics = tie_aware_metrics(pos, scores, ks=(10, 20))
    return {k.replace("HR", "Recall"): v for k, v in metrics.items()}


def member_features(data: GroupRecData, members: np.ndarray, n_users: int) -> tuple[np.ndarray, list[str]]:
    """c_u^g and the names of its columns: the member's global and in-group follow centrality, activity, and the
    group's size."""
    from prefgen.social.centrality import group_member_features, individual_features

    clicks = np.bincount(data.user_train[:, 0], minlength=n_users)
    size = np.bincount(members[:, 0])[members[:, 0]]
    columns, names = [clicks[members[:, 1]], size], ["clicks", "group_size"]
    if data.follows is not None and len(data.follows):
        keep = ~self_follows(data.follows)
        src, dst = data.follows[keep, 0], data.follows[keep, 1]
        n_nodes = int(max(src.max(), dst.max(), n_users - 1)) + 1
        cfg = CentralityConfig()
        glob = individual_features(src, dst, n_nodes, cfg)
        local = group_member_features(src, dst, n_nodes, members[:, 0], members[:, 1], cfg)
        columns += [glob[f][members[:, 1]] for f in sorted(glob)] + [local[f] for f in sorted(local)]
        names += sorted(glob) + [f"in_group.{f}" for f in sorted(local)]
    return standardise_log(np.stack(columns, axis=1).astype(np.float64)), names


def n_items(data: GroupRecData) -> int:
    return int(max(data.user_train[:, 1].max(), data.group_train[:, 1].max(), data.user_test.negatives.max(),
                   data.group_test.negatives.max(), data.user_test.positives.max(), data.group_test.positives.max())) + 1


def prepare(data: GroupRecData, rng: np.random.Generator) -> tuple[TrainData, dict[str, np.ndarray]]:
    members = np.array([(g, u) for g, ms in sorted(data.members.items()) for u in ms], dtype=np.int64)
    n_users = int(max(data.user_train[:, 0].max(), members[:, 1].max(), data.user_test.ids.max())) + 1
    n_groups = int(max(members[:, 0].max(), data.group_train[:, 0].max(), data.group_test.ids.max())) + 1
    user_train, user_val = carve_validation(sorted_lines(data.user_train), rng, test_rows_per_id(data.user_test, n_users))
    group_rows = test_rows_per_id(data.group_test, n_groups)
    if draws_group_test_from_members(data):  # so does validation
        group_train, group_val = carve_group_validation_from_members(sorted_lines(data.group_train), user_val, members, group_rows, rng)
    else:
        group_train, group_val = carve_validation(sorted_lines(data.group_train), rng, group_rows)
    features, names = member_features(data, members, n_users)
    train = TrainData(n_users, n_items(data), n_groups, user_train, group_train, members, features,
                      follows=_follows_among_users(data, n_users), feature_names=names)
    return train, {"user": user_val, "group": group_val}


def test_rows_per_id(test: TestSet, n_ids: int) -> np.ndarray:
    """How many validation lines to carve per id: as many as test holds for it, at least one (CAMRa2011: five).

    Validation then has test's shape and size; one line per group gave too few validation rows to tell
    epochs apart (BENCHMARKS.md, "Figures behind code choices").
    Only the test's row counts are read here.
    """
    return np.maximum(1, np.bincount(test.ids, minlength=n_ids))


def members_test_share(data: GroupRecData) -> float:
    """The share of group test pairs whose item some member of the group also has in the *user* test.

    CAMRa2011: all (each group test item is one member's user test item), Mafengwo: almost none
    (BENCHMARKS.md, "Step 1 on public group-recommendation data"). This reads
    which items the two test files hold, to learn how test was drawn; never a model's score on them.
    """
    test_pairs = set(zip(data.user_test.ids.tolist(), data.user_test.positives.tolist()))
    shared = [any((u, i) in test_pairs for u in data.members.get(g, ())) for g, i in
              zip(data.group_test.ids.tolist(), data.group_test.positives.tolist())]
    return float(np.mean(shared)) if shared else 0.0


def draws_group_test_from_members(data: GroupRecData) -> bool:
    """Whether test drew most group items from the members' test items (CAMRa2011), the rule validation follows."""
    return members_test_share(data) >= 0.5


def carve_group_validation_from_members(group_lines: np.ndarray, user_val: np.ndarray, members: np.ndarray,
                                        per_id: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Group validation drawn only from lines whose item a member holds out in the user validation.

    That is how CAMRa2011's test was drawn: each of its group test items is a member's user test item, and
    only a minority sit in another member's training lines. Drawn from any line instead, most of
    validation's group items sat in a member's training lines for the model to copy (far more than drawn
    this way), and validation kept choosing later epochs whose test group HR@5 was lower (BENCHMARKS.md,
    "Step 1 on public group-recommendation data"). Each group keeps at least one such line in training
    (carve_validation).
    """
    held = np.unique(user_val, axis=0)
    group_items = {(g, i) for g, u in members.tolist() for i in held[held[:, 0] == u, 1].tolist()}
    eligible = np.array([(g, i) in group_items for g, i in group_lines.tolist()], dtype=bool)
    kept, val = carve_validation(group_lines[eligible], rng, per_id)
    return sorted_lines(np.concatenate([group_lines[~eligible], kept])), val


def sorted_lines(pairs: np.ndarray) -> np.ndarray:
    """Training lines sorted by (id, item), repeats kept.

    Why keep repeats: CAMRa2011's group test pairs were drawn from lines, so many of
    them repeat a training pair, as do many of its training lines (BENCHMARKS.md,
    "Step 1 on public group-recommendation data"). Carving
    validation from lines draws it the way test was drawn, and training on lines
    weighs a pair by how often it was logged. Without repeats (Mafengwo) these are
    np.unique's rows in np.unique's order, so nothing else moves.
    """
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _follows_among_users(data: GroupRecData, n_users: int) -> np.ndarray | None:
    """Follow edges between ids the model embeds (the social smoothing's graph); None without a follow file."""
    if data.follows is None:
        return None
    f = data.follows
    return f[~self_follows(f) & (f[:, 0] < n_users) & (f[:, 1] < n_users)]


def popularity_counts(data: GroupRecData, task: str) -> np.ndarray:
    """Distinct ids of the task that interacted with each item in training (n_items,)."""
    train = data.user_train if task == "user" else data.group_train
    return np.bincount(np.unique(train, axis=0)[:, 1], minlength=n_items(data)).astype(np.float64)


def popularity_scores(data: GroupRecData, task: str) -> tuple[np.ndarray, np.ndarray]:
    test, counts = (data.user_test if task == "user" else data.group_test), popularity_counts(data, task)
    return counts[test.positives], counts[test.negatives]


def bootstrap_interval(model_rows: np.ndarray, base_rows: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    diff = model_rows - base_rows
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def popularity_full(data: GroupRecData, task: str) -> dict[str, float]:
    test, counts = (data.user_test if task == "user" else data.group_test), popularity_counts(data, task)
    return full_ranking(np.broadcast_to(counts, (len(test.ids), len(counts))), data, task)


def run_seed(data: GroupRecData, cfg: TrainGraphConfig, log=print, trainer: TrainerConfig = TrainerConfig()) -> dict:
    """Train one seed as the train_graph stage does (train.train_model: the epoch and β chosen on validation, the
    attention's features by cross-validation, then with cfg.refit a fresh model on every line) and score it."""
    rng = np.random.default_rng(cfg.seed)
    train, val = prepare(data, rng)
    every_line = replace(train, user_items=sorted_lines(np.concatenate([train.user_items, val["user"]])),
                         group_items=sorted_lines(np.concatenate([train.group_items, val["group"]])))
    trained = training.train_model(train, val, every_line, cfg, log=log, trainer=trainer)
    model, graphs, history = trained.model, trained.graphs, trained.history
    out = {"best_epoch": history.best_epoch, "val_score": history.best_score, "social_smoothing": history.smoothing,
           "seconds_per_epoch": float(np.mean([e["seconds"] for e in history.epochs])), "influence_features": trained.data.feature_names}
    for task in TASKS:
        test = data.group_test if task == "group" else data.user_test
        scores = score_rows(model, graphs, test.ids, np.concatenate([test.positives[:, None], test.negatives], axis=1), task)
        out[task] = {"metrics": tie_aware_metrics(scores[:, 0], scores[:, 1:]),
                     "rows": {k: per_row_metrics(scores[:, 0], scores[:, 1:], int(k.split("@")[1]))[k] for k in METRICS},
                     "full": full_ranking(score_all(model, graphs, test.ids, task), data, task)}
    log(f"seed {cfg.seed} done: best epoch {history.best_epoch}, "
        + ", ".join(f"{task} HR@10 {out[task]['metrics']['HR@10']:.4f}" for task in TASKS))
    return out


class _SeedLog:
    """A picklable log for a seed run in a spawned process: its lines on stderr, prefixed with the seed."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, line: str) -> None:
        print(f"[seed {self.seed}] {line}", file=sys.stderr, flush=True)


def run_seeds(data: GroupRecData, cfg: TrainGraphConfig, seeds: int, jobs: int = 1, log=print,
              trainer: TrainerConfig = TrainerConfig()) -> list[dict]:
    """One run per seed, in seed order. With jobs > 1 the seeds train in that many spawned processes at once
    (each with cfg.threads torch threads); a seed's run depends only on its seed, so the figures are the same."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    configs = [replace(cfg, seed=cfg.seed + s) for s in range(seeds)]
    if jobs == 1 or seeds == 1:
        return [run_seed(data, c, log, trainer) for c in configs]
    with ProcessPoolExecutor(min(jobs, seeds), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_seed, [data] * seeds, configs, [_SeedLog(c.seed) for c in configs], [trainer] * seeds))


def bench(folder: Path, cfg: TrainGraphConfig, seeds: int, log=print, jobs: int = 1, trainer: TrainerConfig = TrainerConfig()) -> dict:
    data, report = load(folder, log)
    share = members_test_share(data)
    log(f"validation: {share:.2f} of group test items are a member's user test item, so group validation lines are drawn "
        + ("from the members' validation items" if draws_group_test_from_members(data) else "from any training line"))
    runs = run_seeds(data, cfg, seeds, jobs, log, trainer)
    rng = np.random.default_rng(0)
    result: dict = {"seeds": seeds, "best_epochs": [r["best_epoch"] for r in runs], "val_scores": [r["val_score"] for r in runs],
                    "members_test_share": share, "refit": cfg.refit,
                    "social_smoothing": [r["social_smoothing"] for r in runs], "influence_features": [r["influence_features"] for r in runs],
                    "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in runs])), "input": report}
    for task in TASKS:
        pos, neg = popularity_scores(data, task)
        base_rows = {k: per_row_metrics(pos, neg, int(k.split("@")[1]))[k] for k in METRICS}
        mean_rows = {k: np.mean([r[task]["rows"][k] for r in runs], axis=0) for k in METRICS}
        result[task] = {k: float(mean_rows[k].mean()) for k in METRICS}
        result[f"{task}_popularity"] = tie_aware_metrics(pos, neg)
        result[f"{task}_ci"] = {k: bootstrap_interval(mean_rows[k], base_rows[k], rng) for k in METRICS}
        result[f"{task}_full"] = {k: float(np.mean([r[task]["full"][k] for r in runs])) for k in FULL_METRICS}
        result[f"{task}_full_popularity"] = popularity_full(data, task)
    return result


def bench_popularity(folder: Path, log=print) -> dict:
    data, report = load(folder, log)
    result: dict = {"seeds": 0, "input": report}
    for task in TASKS:
        result[task] = tie_aware_metrics(*popularity_scores(data, task))
        result[f"{task}_popularity"] = result[task]
        result[f"{task}_full"] = result[f"{task}_full_popularity"] = popularity_full(data, task)
    return result


def format_table(result: dict, model: str) -> str:
    lines = [f"{'task':<6} {'model':<11} " + " ".join(f"{m:>8}" for m in METRICS)]
    for task in TASKS:
        lines.append(f"{task:<6} {model:<11} " + " ".join(f"{result[task][m]:8.4f}" for m in METRICS))
        if model != "popularity":
            lines.append(f"{task:<6} {'popularity':<11} " + " ".join(f"{result[f'{task}_popularity'][m]:8.4f}" for m in METRICS))
            ci = result[f"{task}_ci"]
            lines.append(f"{task:<6} {'diff 95% CI':<11} " + " ".join(f"{'[%+.3f,%+.3f]' % tuple(ci[m]):>8}" for m in METRICS))
    lines.append(f"full ranking {'':<5} " + " ".join(f"{m:>9}" for m in FULL_METRICS))
    for task in TASKS:
        for name, key in ((model, f"{task}_full"), ("popularity", f"{task}_full_popularity"))[: 1 if model == "popularity" else 2]:
            lines.append(f"{task:<6} {name:<11} " + " ".join(f"{result[key][m]:9.4f}" for m in FULL_METRICS))
    if model != "popularity":
        lines.append(f"seeds {result['seeds']}, best epochs {result['best_epochs']}, social smoothing {result['social_smoothing']}, "
                     f"{result['seconds_per_epoch']:.2f} s/epoch, attention reads {result['influence_features']}")
    return "\n".join(lines)
