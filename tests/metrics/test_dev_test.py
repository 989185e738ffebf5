"""The dev/test halves: stable per key, about even, independent of the other keys; a choice reads dev only."""

from collections.abc import Mapping

import numpy as np
import pytest

from prefgen.metrics.dev_test import dev_figure, half, in_test_half, rows_by_half


class SealedTest(Mapping):
    """A `test` block that fails whoever reads it: what a choice-making path must never do."""

    def __getitem__(self, key):
        raise AssertionError(f"a choice read the test figure {key!r}")

    def __iter__(self):
        raise AssertionError("a choice iterated the test block")

    def __len__(self):
        raise AssertionError("a choice measured the test block")


def test_a_key_keeps_its_half_whatever_else_is_in_the_set():
    keys = [f"ind:u{k}" for k in range(2000)]
    mask = in_test_half(keys)
    assert 0.45 < mask.mean() < 0.55
    assert (in_test_half(keys[:100] + ["grp:new"])[:100] == mask[:100]).all()
    assert [half(key) for key in keys[:5]] == ["test" if m else "dev" for m in mask[:5]]
    assert half("grp:g1") == half("grp:g1") and {half(f"x{k}") for k in range(20)} == {"dev", "test"}


def test_the_rows_of_the_two_halves_are_disjoint_cover_the_set_and_keep_its_order():
    keys = [f"grp:g{k}" for k in range(50)]
    rows = rows_by_half(keys)
    assert sorted(np.concatenate([rows["dev"], rows["test"]]).tolist()) == list(range(50))
    assert all(half(keys[k]) == name for name in ("dev", "test") for k in rows[name])
    assert all((np.diff(rows[name]) > 0).all() for name in ("dev", "test"))


def test_a_choice_reads_the_dev_block_and_is_refused_a_test_figure():
    metrics = {"pairs": 8, "dev": {"win_rate": 0.6, "ablation": {"fused": {"win_rate": 0.6}}}, "test": SealedTest()}
    assert dev_figure(metrics, "win_rate") == 0.6 and dev_figure(metrics, "dev.ablation.fused.win_rate") == 0.6
    with pytest.raises(ValueError, match="'test.win_rate' is a test figure: a choice reads dev only"):
        dev_figure(metrics, "test.win_rate")
    with pytest.raises(KeyError, match="no dev figure 'cold_auc'"):
        dev_figure(metrics, "cold_auc")
    assert dev_figure({"val_score": 0.3, "best_epoch": 4}, "val_score") == 0.3  # a training stage: validation, no halves
