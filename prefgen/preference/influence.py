"""Step 1: which member features the influence attention reads, chosen by cross-validated group clicks.

METHOD.md 1.3 lists several centralities and activity counts for c_u^g. They are
strongly correlated, and the attention trained jointly on all of them settles on
whichever blend fits its group clicks, not on the one that carries influence: it
recovers influence worse than PageRank alone (BENCHMARKS.md, "Step 1 on world-v1:
member influence"). So before the model is trained for export,
each candidate feature set S is scored by K-fold cross-validation of a small
surrogate over the trained model's frozen tastes:

    w_u^g = softmax_{u in g}( a . c_{u,S}^g + b_u ),   b_u ~ N(0, 1/precision)
    P(i | g) = softmax_i( s * < sum_{u in g} w_u^g t_u , e_i > )

with t_u the member's scoring vector (P p_u) and e_i the image embedding; a, s
and b are fitted by MAP (L-BFGS) on K-1 folds of the group lines and scored by
the negative log-likelihood of the held-out fold. Candidates: no feature (b
alone), each feature alone, every feature. The rule is the one-standard-error
rule (Breiman et al. 1984; Hastie, Tibshirani & Friedman, "The Elements of
Statistical Learning", 2nd ed., section 7.10): the candidate with the fewest
features whose cross-validated NLL is within one standard error of the best,
the standard error being that of the paired per-fold difference to the best.
Among candidates of equal size the lower NLL wins.

A feature that is the same for every member of each group (the group's size)
adds one constant to all of a group's logits, so the surrogate scores it exactly
as "none": it has no evidence either way. The attention itself is an MLP over
the features and the member's embedding, where such a feature can still sharpen
or flatten the weights (large groups against small ones). So the choice is made
among the features the surrogate can judge, and the others are kept, as the
model configured without the choice reads them (on CAMRa2011 "clicks + group
size" and "clicks" tied to the last digit and the rule dropped the size on no
evidence). Keeping it has a price where the size does not help (world-v1's
influence recovery, BENCHMARKS.md, "Step 1 on world-v1: member influence"); a
surrogate that can judge it (a group-size temperature on the logits) is not built.

Why a surrogate rather than K trainings of the model: one surrogate fit takes
seconds; the model's epochs take minutes per fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.utils import scatter, softmax


@dataclass
class FeatureChoice:
    columns: list[int]  # chosen columns of the member feature matrix
    names: list[str]  # their names
    folds: int
    # features the same for every member of each group: the surrogate cannot judge them, so they are kept
    unjudged: list[str] = field(default_factory=list)
    # per candidate: its feature names, summed held-out NLL over the folds (nats), its excess over the best and
    # that excess's standard error (paired over folds)
    candidates: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"chosen": self.names, "folds": self.folds, "rule": "one standard error, fewest features",
                "kept_unjudged": self.unjudged, "candidates": self.candidates}


@dataclass
class _Surrogate:
    """The frozen parts: member rows, member tastes t_u, image embeddings e_i (float64 for L-BFGS)."""

    group: torch.Tensor  # (M,) group of each member row
    user: torch.Tensor  # (M,) user of each member row
    features: torch.Tensor  # (M, F)
    tastes: torch.Tensor  # (U, d)
    items: torch.Tensor  # (I, d)
    n_groups: int
    precision: float

    def attention(self, columns: list[int], theta: torch.Tensor) -> torch.Tensor:
        n_a = len(columns)
        logits = self.features[:, columns] @ theta[:n_a] + theta[n_a + 1 :][self.user]
        return softmax(logits, self.group, num_nodes=self.n_groups)

    def nll(self, columns: list[int], theta: torch.Tensor, counts: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """-sum of log P(i | g) over the lines counted in counts [len(groups), I] (a group's lines share its mix)."""
        weight = self.attention(columns, theta)
        mix = scatter(weight[:, None] * self.tastes[self.user], self.group, dim=0, dim_size=self.n_groups, reduce="sum")
        logits = theta[len(columns)].exp() * mix[groups] @ self.items.T
        return -(counts * torch.log_softmax(logits, dim=1)).sum()

    def fit(self, columns: list[int], counts: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """MAP of theta = [a (one per column), log s, b (one per individual)] on the counted lines."""
        theta = torch.zeros(len(columns) + 1 + len(self.tastes), dtype=torch.float64, requires_grad=True)
        # Stop once an iteration gains under 1e-4 nats: far below the differences of several nats the choice
        # weighs, and it saves evaluations (BENCHMARKS.md, "Figures behind code choices").
        optimiser = torch.optim.LBFGS([theta], max_iter=200, tolerance_change=1e-4, line_search_fn="strong_wolfe")
        n_a = len(columns)

        def closure():
            optimiser.zero_grad()
            loss = self.nll(columns, theta, counts, groups) + 0.5 * self.precision * (theta[n_a + 1 :] ** 2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        return theta.detach()


def select_features(tastes: torch.Tensor, items: torch.Tensor, members: np.ndarray, features: np.ndarray,
                    group_items: np.ndarray, names: list[str], folds: int = 10, precision: float = 10.0, seed: int = 0,
                    log=print) -> FeatureChoice:
    """The feature columns the attention should read (module docstring), from the group lines `group_items`.

    Args:
        tastes: (U, d) each individual's scoring vector P p_u from a trained model.
        items: (I, d) image embeddings of that model.
        members: (M, 2) group, user rows; features: (M, F) their standardised c_u^g; names: the F column names.
        group_items: (N, 2) group, image training lines (repeats count as often as they occur).
        folds: K of the cross-validation (default 10); each group's lines are spread evenly over the folds.
        precision: prior precision of the persuasiveness b_u (default 10, a prior sd of 0.32).
    """
    if features.shape[1] != len(names):
        raise ValueError(f"{features.shape[1]} feature columns but {len(names)} names")
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    unjudged = _constant_within_groups(members[:, 0], features)
    judged = [k for k in range(len(names)) if k not in unjudged]
    if unjudged:
        log(f"influence features: kept without judging (the same for every member of a group): "
            f"{', '.join(names[k] for k in unjudged)}")
    if not judged:
        return _choice([], unjudged, names, folds, {})
    surrogate = _Surrogate(torch.as_tensor(members[:, 0]), torch.as_tensor(members[:, 1]),
                           torch.as_tensor(features, dtype=torch.float64), tastes.detach().double(),
                           items.detach().double(), int(max(members[:, 0].max(), group_items[:, 0].max())) + 1, precision)
    fold = _folds(group_items, folds, np.random.default_rng([seed, 2]))
    candidates = {"none": [], **{names[k]: [k] for k in judged}}
    if len(judged) > 1:
        candidates["all"] = judged
    per_fold = {}
    for n, (label, columns) in enumerate(candidates.items()):
        per_fold[label] = np.array([_held_out_nll(surrogate, columns, group_items, fold == k, len(items)) for k in range(folds)])
        log(f"influence features {n + 1}/{len(candidates)}: {label:<24} held-out NLL {per_fold[label].sum():.1f}")
    return _one_standard_error(candidates, per_fold, names, folds, unjudged)


def _constant_within_groups(group: np.ndarray, features: np.ndarray) -> list[int]:
    """Columns whose value never differs between two members of one group."""
    order = np.argsort(group, kind="stable")
    same_group = group[order][1:] == group[order][:-1]
    sorted_features = features[order]
    varies = (sorted_features[1:] != sorted_features[:-1])[same_group].any(axis=0)
    return [k for k in range(features.shape[1]) if not varies[k]]


def _folds(group_items: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each line, stratified by group: a group's lines are dealt round-robin over a random order."""
    fold = np.empty(len(group_items), dtype=np.int64)
    order = rng.permutation(len(group_items))
    by_group = order[np.argsort(group_items[order, 0], kind="stable")]
    starts = np.searchsorted(group_items[by_group, 0], group_items[by_group, 0], side="left")
    offset = rng.integers(0, folds, int(group_items[:, 0].max()) + 1)  # so groups of one line fill every fold
    fold[by_group] = (np.arange(len(by_group)) - starts + offset[group_items[by_group, 0]]) % folds
    return fold


def _counts(lines: np.ndarray, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(groups with lines, their line counts per image [G', I]): the likelihood needs each group's mix once."""
    groups, row = np.unique(lines[:, 0], return_inverse=True)
    counts = torch.zeros(len(groups), n_items, dtype=torch.float64)
    counts.index_put_((torch.as_tensor(row), torch.as_tensor(lines[:, 1])), torch.ones(len(lines), dtype=torch.float64),
                      accumulate=True)
    return counts, torch.as_tensor(groups)


def _held_out_nll(surrogate: _Surrogate, columns: list[int], lines: np.ndarray, held: np.ndarray, n_items: int) -> float:
    theta = surrogate.fit(columns, *_counts(lines[~held], n_items))
    with torch.no_grad():
        return float(surrogate.nll(columns, theta, *_counts(lines[held], n_items)))


def _one_standard_error(candidates: dict[str, list[int]], per_fold: dict[str, np.ndarray], names: list[str],
                        folds: int, unjudged: tuple[int, ...] | list[int] = ()) -> FeatureChoice:
    best = min(per_fold, key=lambda k: per_fold[k].sum())
    table = {}
    for label, nll in per_fold.items():
        excess = nll - per_fold[best]
        table[label] = {"features": [names[k] for k in candidates[label]], "heldout_nll": float(nll.sum()),
                        "excess": float(excess.sum()), "se": float(excess.std(ddof=1) * np.sqrt(folds))}
    eligible = [k for k in candidates if table[k]["excess"] <= table[k]["se"]]
    chosen = min(eligible, key=lambda k: (len(candidates[k]), table[k]["heldout_nll"]))
    return _choice(candidates[chosen], unjudged, names, folds, table)


def _choice(chosen: list[int], unjudged: tuple[int, ...] | list[int], names: list[str], folds: int,
            table: dict) -> FeatureChoice:
    """The chosen judged columns with the unjudged ones kept, in the feature matrix's order."""
    columns = sorted([*chosen, *unjudged])
    return FeatureChoice(columns, [names[k] for k in columns], folds, [names[k] for k in unjudged], table)
