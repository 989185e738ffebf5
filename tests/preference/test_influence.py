"""Choosing the influence attention's member features by cross-validated group clicks (preference/influence.py)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from prefgen.preference.influence import _folds, _one_standard_error, select_features
from prefgen.preference.train import train_model
from tests.preference.test_train import CFG, planted


def group_clicks(driver_weight: float, seed: int = 0, lines_per_group: int = 40, sizes: tuple[int, ...] = (4,)):
    """Groups (of 4, or of the sizes in turn) whose clicks follow sum_u softmax(driver_weight * driver_u) t_u; a
    decoy feature correlated with the driver (r about 0.7) and a noise feature beside it."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_groups, dim = 80, 40, 60, 6
    tastes, items = rng.normal(size=(n_users, dim)), rng.normal(size=(n_items, dim))
    members = np.array([(g, u) for g in range(n_groups) for u in rng.choice(n_users, sizes[g % len(sizes)], replace=False)])
    driver = rng.normal(size=n_users)
    features = np.stack([driver, driver + rng.normal(size=n_users), rng.normal(size=n_users)], axis=1)[members[:, 1]]
    lines = []
    for g in range(n_groups):
        rows = members[:, 0] == g
        weight = np.exp(driver_weight * features[rows, 0])
        mix = (weight / weight.sum()) @ tastes[members[rows, 1]]
        p = np.exp(2 * items @ mix)
        lines += [(g, i) for i in rng.choice(n_items, lines_per_group, p=p / p.sum())]
    return torch.tensor(tastes), torch.tensor(items), members, features, np.array(lines)


def test_chooses_the_feature_that_drives_the_groups_over_a_correlated_decoy():
    tastes, items, members, features, lines = group_clicks(driver_weight=2.0)
    choice = select_features(tastes, items, members, features, lines, ["driver", "decoy", "noise"], folds=5, log=lambda _: None)
    assert choice.names == ["driver"] and choice.columns == [0]
    table = choice.candidates
    assert table["driver"]["heldout_nll"] < table["decoy"]["heldout_nll"] < table["noise"]["heldout_nll"]
    assert table["none"]["excess"] > table["none"]["se"]  # influence is there to find


def test_chooses_no_feature_when_none_moves_the_groups():
    tastes, items, members, features, lines = group_clicks(driver_weight=0.0)
    choice = select_features(tastes, items, members, features, lines, ["driver", "decoy", "noise"], folds=5, log=lambda _: None)
    assert choice.names == [] and choice.columns == []


def with_group_size(members: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The features with a group-size column in front (the same for every member of a group, as in the benchmark)."""
    size = np.bincount(members[:, 0])[members[:, 0]].astype(float)
    return np.concatenate([size[:, None], features], axis=1)


def test_a_feature_the_same_within_every_group_is_kept_without_judging():
    tastes, items, members, features, lines = group_clicks(driver_weight=2.0, sizes=(3, 4, 5))
    features = with_group_size(members, features)
    names = ["group_size", "driver", "decoy", "noise"]
    choice = select_features(tastes, items, members, features, lines, names, folds=5, log=lambda _: None)
    assert choice.unjudged == ["group_size"] and choice.names == ["group_size", "driver"] and choice.columns == [0, 1]
    assert set(choice.candidates) == {"none", "driver", "decoy", "noise", "all"}  # size not fitted: it would tie "none"
    assert choice.candidates["all"]["features"] == ["driver", "decoy", "noise"]
    assert choice.as_dict()["kept_unjudged"] == ["group_size"]
    only_size = select_features(tastes, items, members, features[:, :1], lines, ["group_size"], log=lambda _: None)
    assert only_size.names == ["group_size"] and only_size.candidates == {}


def test_one_standard_error_rule():
    names = ["a", "b"]
    candidates = {"none": [], "a": [0], "b": [1], "all": [0, 1]}
    best = np.full(4, 100.0)
    per_fold = {"none": best + 10, "a": best + np.array([3.0, -2, 3, -2]), "b": best + np.array([1.0, 0, 1, 0]), "all": best}
    choice = _one_standard_error(candidates, per_fold, names, folds=4)
    assert choice.candidates["a"]["excess"] == 2.0 and choice.candidates["a"]["se"] == pytest.approx(5.77, abs=0.01)
    assert choice.names == ["a"]  # "b" is as close on the sum, but steadily: 2 > its SE of 1.15
    per_fold["b"] = best + np.array([1.5, -1, 1.5, -1])  # within its SE too, with a lower NLL: of two singles it wins
    assert _one_standard_error(candidates, per_fold, names, folds=4).names == ["b"]
    per_fold["a"] = per_fold["b"] = best + 1.0  # a steady excess has no spread: outside one standard error
    assert _one_standard_error(candidates, per_fold, names, folds=4).names == ["a", "b"]
    per_fold["none"] = best + np.array([5.0, -5, 5, -5])  # the empty set within one SE: the simplest of all
    assert _one_standard_error(candidates, per_fold, names, folds=4).names == []


def test_folds_spread_each_groups_lines_evenly():
    lines = np.array([(g, i) for g in range(7) for i in range(g * 3 + 1)])
    fold = _folds(lines, 5, np.random.default_rng(0))
    for g in range(7):
        counts = np.bincount(fold[lines[:, 0] == g], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert len(set(fold[lines[:, 0] == 0].tolist() + fold[lines[:, 0] == 1].tolist())) > 1  # not all in one fold


def test_bad_arguments_are_named():
    tastes, items, members, features, lines = group_clicks(driver_weight=1.0, lines_per_group=3)
    with pytest.raises(ValueError, match="3 feature columns but 2 names"):
        select_features(tastes, items, members, features, lines, ["a", "b"])
    with pytest.raises(ValueError, match="at least 2 folds"):
        select_features(tastes, items, members, features, lines, ["a", "b", "c"], folds=1)


def test_train_model_exports_a_model_over_the_chosen_features():
    data = replace(planted(), feature_names=["x", "y", "z"])
    train, val = data.group_items[::2], data.group_items[1::2]
    cfg = replace(CFG, max_epochs=3, influence_folds=3)
    trained = train_model(replace(data, group_items=train), {"group": val}, data, cfg, log=lambda _: None)
    chosen = trained.influence.columns
    assert trained.data.feature_names == trained.influence.names == [["x", "y", "z"][k] for k in chosen]
    assert trained.model.attention[0].in_features == len(chosen) + cfg.dim
    assert trained.data.features.shape[1] == len(chosen)
    everything = train_model(replace(data, group_items=train), {"group": val}, data, replace(cfg, influence_folds=0), log=lambda _: None)
    assert everything.influence is None and everything.data.feature_names == ["x", "y", "z"]
    refitted = train_model(replace(data, group_items=train), {"group": val}, data, replace(cfg, refit=True), log=lambda _: None)
    assert len(refitted.final.epochs) == refitted.history.best_epoch + 1
    assert refitted.data.feature_names == trained.data.feature_names and len(refitted.data.group_items) == len(data.group_items)
