"""`prefgen bench grouprec` end to end on a tiny dataset (the real runs are benchmarks)."""

import json
import subprocess
import sys

import numpy as np

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
    assert all(0 <= v <= 1 for v in result["user"].values())


def test_bench_rejects_an_unknown_model(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prefgen", "bench", "grouprec", "--data", str(tmp_path), "--model", "magic"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--model must be prefgen or popularity" in done.stderr
