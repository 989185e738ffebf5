"""The 1 + 100 protocol: ties in expectation, and the README's popularity table reproduced."""

from pathlib import Path

import numpy as np
import pytest

from prefgen.metrics.sampled import per_row_metrics, tie_aware_metrics
from prefgen.preference.grouprec import read_dataset

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_ties_are_broken_in_expectation():
    # 2 negatives above, 2 tied: rank uniform on {2, 3, 4}; HR@3 = 1/3, HR@5 = 1.
    got = tie_aware_metrics(np.array([1.0]), np.array([[2.0, 3.0, 1.0, 1.0, 0.0]]), ks=(3, 5))
    assert np.isclose(got["HR@3"], 1 / 3) and np.isclose(got["HR@5"], 1.0)
    assert np.isclose(got["NDCG@5"], (1 / np.log2(4) + 1 / np.log2(5) + 1 / np.log2(6)) / 3)
    rows = per_row_metrics(np.array([1.0, 5.0]), np.array([[2.0, 1.0], [0.0, 0.0]]), k=1)
    assert np.allclose(rows["HR@1"], [0.0, 1.0])


def test_a_constant_scorer_gets_chance_not_a_perfect_score():
    got = tie_aware_metrics(np.zeros(10), np.zeros((10, 100)), ks=(10,))
    assert np.isclose(got["HR@10"], 10 / 101)


# The popularity table of ../shared/data/README.md (score = distinct (id, item) train pairs).
POPULARITY = {
    ("CAMRa2011", "user"): (0.6233, 0.7894, 0.4206, 0.4746),
    ("CAMRa2011", "group"): (0.5855, 0.7798, 0.3998, 0.4630),
    ("Mafengwo", "user"): (0.6359, 0.7433, 0.4577, 0.4926),
    ("Mafengwo", "group"): (0.4855, 0.6184, 0.3551, 0.3979),
}


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not present at {DATA} (the team's ../shared/data)")
@pytest.mark.parametrize(("dataset", "task"), sorted(POPULARITY))
def test_popularity_table_reproduced_to_three_decimals(dataset, task):
    data = read_dataset(DATA / dataset)
    train, test = (data.user_train, data.user_test) if task == "user" else (data.group_train, data.group_test)
    pairs = np.unique(train, axis=0)
    size = max(pairs[:, 1].max(), test.negatives.max(), test.positives.max()) + 1
    popularity = np.bincount(pairs[:, 1], minlength=size)
    got = tie_aware_metrics(popularity[test.positives], popularity[test.negatives])
    expected = dict(zip(("HR@5", "HR@10", "NDCG@5", "NDCG@10"), POPULARITY[(dataset, task)]))
    for key, value in expected.items():
        assert abs(got[key] - value) < 5e-4, (key, got[key], value)
