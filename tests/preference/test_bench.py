"""`prefgen bench grouprec` end to end on a tiny dataset (the real runs are benchmarks)."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from tests.preference.test_grouprec import _tiny


def _bigger(folder):
    rng = np.random.default_rng(0)
    users, items = 30, 40
    train = "".join(f"{u} {i}\n" for u in range(users) for i in rng.choice(items, 5, replace=False))
    group_train = "".join(f"{g} {i}\n" for g in range(6) for i in rng.choice(items, 4, replace=False))
    negatives = lambda ids, pos: "".join(f"({a},{p}) " + " ".join(str((p + k) % items) for k in range(1, 11)) + "\n" for a, p in zip(ids, pos))  # noqa: E731
    return _tiny(folder, **{
        "userRatingTrain.txt": train, "groupRatingTrain.txt": group_train,
        "userRatingTest.txt": "".join(f"{u} {u % items}\n" for u in range(users)),
        "userRatingNegative.txt": negatives(range(users), [u % items for u in range(users)]),
        "groupRatingTest.txt": "".join(f"{g} {g}\n" for g in range(6)),
        "groupRatingNegative.txt": negatives(range(6), range(6)),
        "groupMember.txt": "".join(f"{g} {g * 5},{g * 5 + 1},{g * 5 + 2}\n" for g in range(6)),
        "userFollow.txt": "".join(f"{u}:{(u + 1) % users} {(u + 7) % users}\n" for u in range(users)),
    })


def test_bench_cli_prints_the_table_and_writes_json(tmp_path):
    folder = _bigger(tmp_path / "ds")
    done = subprocess.run([sys.executable, "-m", "prefgen", "bench", "grouprec", "--data", str(folder), "--max-epochs", "2",
                           "--json", str(tmp_path / "out.json"), "--params", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert set(result["group"]) == {"HR@5", "HR@10", "NDCG@5", "NDCG@10"} and set(result["user"]) == set(result["group"])
    assert "popularity" in done.stderr and "diff 95% CI" in done.stderr
    user = result["user"]  # a hit at rank r counts 1 in HR and 1/log2(r + 2) <= 1 in NDCG; a cut-off of 10 sees what 5 sees
    assert user["NDCG@5"] <= user["HR@5"] <= user["HR@10"] and user["NDCG@5"] <= user["NDCG@10"] <= user["HR@10"]
    assert result["members_test_share"] == 1 / 6 and len(result["val_scores"]) == 1
    assert "group validation lines are drawn from any training line" in done.stderr


def test_bench_rejects_an_unknown_model(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prefgen", "bench", "grouprec", "--data", str(tmp_path), "--model", "magic"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--model must be prefgen or popularity" in done.stderr


def test_full_ranking_masks_training_items_and_breaks_ties_in_expectation(tmp_path):
    from prefgen.preference.bench import full_ranking
    from prefgen.preference.grouprec import GroupRecData, TestSet

    test = TestSet(np.array([0, 1]), np.array([3, 0]), np.zeros((2, 1), dtype=np.int64))
    data = GroupRecData(np.array([[0, 0], [0, 1]]), np.zeros((0, 2), dtype=np.int64), test, test, {}, None)
    scores = np.array([[9.0, 9.0, 1.0, 5.0, 5.0],   # row 0: items 0, 1 seen in training; item 4 ties with the positive 3
                       [1.0, 2.0, 3.0, 4.0, 5.0]])  # row 1: positive 0 is last of 5
    metrics = full_ranking(scores, data, "user")
    # row 0: rank 0 or 1 with probability 1/2 each; row 1: rank 4
    assert metrics["Recall@10"] == pytest.approx(1.0)
    assert metrics["NDCG@10"] == pytest.approx(((1 + 1 / np.log2(3)) / 2 + 1 / np.log2(6)) / 2)
    assert scores[0, 0] == 9.0  # the caller's scores are not masked in place


def test_bench_counts_bad_input_and_reports_full_ranking(tmp_path):
    folder = _bigger(tmp_path / "ds")
    (folder / "userRatingTest.txt").write_text((folder / "userRatingTest.txt").read_text().replace("29 29\n", "99 29\n"))
    neg = (folder / "userRatingNegative.txt").read_text().replace("(29,29)", "(99,29)")
    (folder / "userRatingNegative.txt").write_text(neg)
    done = subprocess.run([sys.executable, "-m", "prefgen", "bench", "grouprec", "--data", str(folder), "--max-epochs", "1",
                           "--json", str(tmp_path / "out.json"), "--params", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "input: 1 test users with no training interactions (e.g. 99)" in done.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["input"]["test users with no training interactions"]["count"] == 1
    assert set(result["group_full"]) == {"Recall@10", "NDCG@10", "Recall@20", "NDCG@20"} and "full ranking" in done.stderr


def test_seeds_in_parallel_processes_give_the_figures_of_one_at_a_time(tmp_path):
    from prefgen.preference import bench
    from prefgen.preference.config import TrainGraphConfig

    folder = _bigger(tmp_path / "ds")
    cfg = TrainGraphConfig(max_epochs=2, item_features=False)
    one, parallel = bench.bench(folder, cfg, 2, log=lambda line: None), bench.bench(folder, cfg, 2, log=lambda line: None, jobs=2)
    for task in bench.TASKS:
        assert one[task] == parallel[task] and one[f"{task}_ci"] == parallel[f"{task}_ci"]
    assert one["best_epochs"] == parallel["best_epochs"]
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        bench.run_seeds(None, cfg, 2, jobs=0)


def test_repeated_lines_stay_in_training_and_validation_is_drawn_from_lines(tmp_path):
    from prefgen.preference import bench

    folder = _bigger(tmp_path / "ds")
    lines = (folder / "groupRatingTrain.txt").read_text().splitlines()
    repeated = [line for line in lines if line.split()[0] in {"0", "1", "2"}]
    (folder / "groupRatingTrain.txt").write_text("\n".join(lines + repeated * 3) + "\n")  # groups 0-2 log each pair 4 times
    data, _ = bench.load(folder, log=lambda line: None)
    logged = _times_each_pair(data.group_train)
    train, val = bench.prepare(data, np.random.default_rng(0))

    assert len(train.group_items) + len(val["group"]) == len(data.group_train)  # no line lost, none merged
    trained = _times_each_pair(train.group_items)
    held = [tuple(p) for p in val["group"].tolist()]
    assert sorted(set(logged.values())) == [1, 4] and len(held) == 6
    for pair, n in logged.items():
        assert trained.get(pair, 0) == n - held.count(pair)  # repeats keep their weight; only the held-out line leaves


def _times_each_pair(lines: np.ndarray) -> dict[tuple[int, int], int]:
    pairs, counts = np.unique(lines, axis=0, return_counts=True)
    return {tuple(p): int(n) for p, n in zip(pairs.tolist(), counts)}


def test_validation_has_the_shape_of_test(tmp_path):
    """As many validation lines per id as test rows for it (at least one), so CAMRa2011's validation is test-sized."""
    from prefgen.preference import bench

    folder = _bigger(tmp_path / "ds")
    test_lines = [f"{g} {(g + k) % 40}" for g in range(6) for k in range(3)]  # three test rows per group
    (folder / "groupRatingTest.txt").write_text("\n".join(test_lines) + "\n")
    (folder / "groupRatingNegative.txt").write_text("".join(f"({line.replace(' ', ',')}) 30 31\n" for line in test_lines))
    data, _ = bench.load(folder, log=lambda line: None)
    train, val = bench.prepare(data, np.random.default_rng(0))
    assert np.bincount(val["group"][:, 0]).tolist() == [3] * 6  # each group logged 4 lines: 3 held, 1 trains
    assert np.bincount(train.group_items[:, 0]).tolist() == [1] * 6
    assert np.bincount(val["user"][:, 0]).tolist() == [1] * 30  # one test row per user: one line, as before


def _households(folder):
    """_bigger's users in households: a group logs its members' lines, and its test item is a member's test item."""
    folder = _bigger(folder)
    user_lines = [line.split() for line in (folder / "userRatingTrain.txt").read_text().splitlines()]
    group_lines = [f"{g} {i}" for g in range(6) for u, i in user_lines if int(u) in (5 * g, 5 * g + 1, 5 * g + 2)]
    (folder / "groupRatingTrain.txt").write_text("\n".join(group_lines) + "\n")
    (folder / "groupRatingTest.txt").write_text("".join(f"{g} {5 * g % 40}\n" for g in range(6)))
    (folder / "groupRatingNegative.txt").write_text("".join(f"({g},{5 * g % 40}) 38 39\n" for g in range(6)))
    return folder


def test_members_test_share_reads_how_the_group_test_was_drawn(tmp_path):
    from prefgen.preference import bench

    households, _ = bench.load(_households(tmp_path / "h"), log=lambda line: None)
    independent, _ = bench.load(_bigger(tmp_path / "b"), log=lambda line: None)
    assert bench.members_test_share(households) == 1.0
    assert bench.members_test_share(independent) == 1 / 6  # only group 0's test item is a member's (user 0's item 0)


def test_group_validation_is_drawn_from_the_members_validation_items_where_test_was(tmp_path):
    from prefgen.preference import bench

    data, _ = bench.load(_households(tmp_path / "h"), log=lambda line: None)
    train, val = bench.prepare(data, np.random.default_rng(0))
    members = {}
    for g, u in train.members.tolist():
        members.setdefault(g, set()).add(u)
    user_val = set(map(tuple, val["user"].tolist()))
    assert np.bincount(val["group"][:, 0]).tolist() == [1] * 6  # one test row per group: one validation line
    for g, i in val["group"].tolist():
        assert any((u, i) in user_val for u in members[g])  # a member's validation item, as test's are
    assert len(train.group_items) + len(val["group"]) == len(data.group_train)  # no line lost
    assert set(np.unique(train.group_items[:, 0]).tolist()) == set(range(6))  # every group keeps lines to train on

    independent, _ = bench.load(_bigger(tmp_path / "b"), log=lambda line: None)
    _, val = bench.prepare(independent, np.random.default_rng(0))
    user_val = set(map(tuple, val["user"].tolist()))
    assert not all(any((u, i) in user_val for u in range(5 * g, 5 * g + 3)) for g, i in val["group"].tolist())


def test_refit_trains_on_every_line_for_the_chosen_epochs(tmp_path, monkeypatch):
    from prefgen.preference import bench
    from prefgen.preference.config import TrainGraphConfig

    data, _ = bench.load(_bigger(tmp_path / "ds"), log=lambda line: None)
    cfg = TrainGraphConfig(max_epochs=2, item_features=False, influence_folds=0)  # the features' choice: test_train
    refits = []
    from prefgen.preference import train

    train_for = train.train_for
    monkeypatch.setattr(train, "train_for", lambda d, c, epochs, *args, **kw: refits.append((d, epochs)) or train_for(d, c, epochs, *args, **kw))
    plain = bench.run_seed(data, cfg, log=lambda line: None)
    refit = bench.run_seed(data, replace(cfg, refit=True), log=lambda line: None)
    ((every_line, epochs),) = refits
    assert epochs == plain["best_epoch"] + 1
    assert len(every_line.user_items) == len(data.user_train) and len(every_line.group_items) == len(data.group_train)
    assert refit["group"]["metrics"] != plain["group"]["metrics"] or refit["user"]["metrics"] != plain["user"]["metrics"]
