"""Study: how far Step 1's data let any learner go on world-v1 (issues 4 and 5). Reads ground truth: evaluation only.

    .venv/bin/python benchmarks/step1_ceilings.py                # a trained pipeline under ./data (world-v1)
    .venv/bin/python benchmarks/step1_ceilings.py --root /path/to/clone --json benchmarks/results/step1_ceilings.json

Influence (issue 4). The world's true influence is softmax over the group of
(standardised log-PageRank + a hidden persuasiveness) / 0.6, and group clicks are
drawn from the influence-weighted mean taste (prefgen/data/synth.py). The most
favourable learner knows that model exactly, the true PageRank and every image's
class, and fits only each individual's persuasiveness (MAP, prior N(0, 1/reg))
from group clicks, given member tastes that are (a) the truth or (b) Step 1's
estimate (its score averaged over the train images of each class). Reported: the
within-group Spearman with the true influence over groups of >= 3 members, beside
PageRank alone (`ref_influence_spearman`) and Step 1's learned attention.

Influence refit (issue 4): what a learner that does NOT know the world's form can
pick. Step 1's trained member tastes (each individual's scoring vector P p_u) and
image embeddings are frozen; attention = softmax over the group of (a . c_u^g + b_u)
over Step 1's own member features c_u^g (one column, or all of them), with b_u a
per-individual persuasiveness under a N(0, 1/prec) prior, fitted by MAP to the
train group clicks less one held out per group (train.carve_validation). Reported per feature set: the
held-out group-click NLL (what such a learner could select on) and the Spearman
with the true influence (what it would get).

Cold start (issue 5). Each individual's 48 taste parameters (hue, pattern, shape,
hue x shape) fitted by MAP from its train-split interactions under the exact click
model, with a prior around the fitted population mean (empirical Bayes), and the
same with 128 free class utilities instead of the structured 48. Scored on the cold
images as eval/mapper.py scores the mapper (individuals only), per dev/test half of the
individuals as eval_mapper's figures are. The study picks no setting from these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefgen.data import (
    contract as c,  # noqa: E402
    render,  # noqa: E402
)
from prefgen.data.split import training_events  # noqa: E402
from prefgen.data.tables import scan_parts  # noqa: E402
from prefgen.data.tastes import N_H, N_P, N_S, Tastes  # noqa: E402
from prefgen.eval.reference import cold_task, restrict, summarise_auc  # noqa: E402
from prefgen.metrics import ranking  # noqa: E402
from prefgen.metrics.dev_test import rows_by_half  # noqa: E402
from prefgen.params import load_params, section  # noqa: E402
from prefgen.paths import Paths  # noqa: E402
from prefgen.preference import stage_data  # noqa: E402
from prefgen.preference.config import TrainGraphConfig  # noqa: E402
from prefgen.preference.train import carve_validation  # noqa: E402

TEMPERATURE, NOISE, INFLUENCE_TEMPERATURE = 0.7, 0.15, 0.6  # the world's click and influence model (synth.py)
INDIVIDUAL_TYPES = ["click", "repost", "comment", "favorite"]


def class_of(images: pl.DataFrame) -> dict[str, int]:
    cls = images["hue"].to_numpy() * render.N_CLASSES // len(render.HUES) + images["pattern"].to_numpy() * len(render.SHAPES) + images["shape"].to_numpy()
    return dict(zip(images["image_id"], cls.tolist()))


def image_log_prob(class_logits: torch.Tensor, rows: torch.Tensor, classes: torch.Tensor, size: torch.Tensor, n_images: int) -> torch.Tensor:
    """log P(image) of each event: uniform with prob NOISE, else its class by softmax, then uniform within the class."""
    lp = torch.log_softmax(class_logits + size.clamp_min(1e-9).log(), dim=1)
    return (NOISE / n_images + (1 - NOISE) * lp[rows, classes].exp() / size[classes]).log()


def fit_map(theta0: torch.Tensor, nll) -> torch.Tensor:
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll(theta)
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach()


def within_group_spearman(score: np.ndarray, truth: np.ndarray, group: np.ndarray) -> float:
    return float(np.nanmean([spearmanr(score[group == g], truth[group == g]).statistic
                             for g in np.unique(group) if (group == g).sum() >= 3]))


def influence_study(paths: Paths, reg: float) -> dict:
    truth_dir = paths.truth
    ind, gm = pl.read_parquet(truth_dir / "individuals.parquet"), pl.read_parquet(truth_dir / "group_members.parquet")
    cls = class_of(pl.read_parquet(truth_dir / "images.parquet"))
    size = torch.tensor(np.bincount(list(cls.values()), minlength=render.N_CLASSES), dtype=torch.float64)
    gids = {g: k for k, g in enumerate(sorted(set(gm["group_id"])))}
    group, truth = np.array([gids[g] for g in gm["group_id"]]), gm["influence"].to_numpy()
    pagerank = dict(zip(ind["individual_id"], ind["pagerank"]))
    lp = np.log(np.array([pagerank[u] for u in gm["member_id"]]))
    all_lp = np.log(ind["pagerank"].to_numpy())
    z_pr = torch.tensor((lp - all_lp.mean()) / all_lp.std())
    gt = torch.tensor(group)
    member_index = {u: k for k, u in enumerate(sorted(set(gm["member_id"])))}
    ut = torch.tensor([member_index[u] for u in gm["member_id"]])
    true_tastes = dict(zip(ind["individual_id"], Tastes.from_flat(np.stack(ind["taste"].to_numpy())).class_utility().reshape(len(ind), -1)))
    true_utility = torch.tensor(np.stack([true_tastes[u] for u in sorted(member_index)]))

    def clicks(train_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if train_only:
            events = training_events(paths.tables, paths.split).collect()
        else:
            events = scan_parts(paths.tables / c.EVENTS_DIR, c.EVENTS_SCHEMA).collect()
        events = events.filter(pl.col("type") == "group_click")
        return torch.tensor([gids[a] for a in events["actor_id"]]), torch.tensor([cls[b] for b in events["target_id"]])

    def influence(theta: torch.Tensor) -> torch.Tensor:
        s = (z_pr + theta[ut]) / INFLUENCE_TEMPERATURE
        s = s - torch.zeros(len(gids), dtype=s.dtype).scatter_reduce(0, gt, s, "amax", include_self=False)[gt]
        e = s.exp()
        return e / torch.zeros(len(gids), dtype=e.dtype).index_add(0, gt, e)[gt]

    def learn(utility: torch.Tensor, rows: torch.Tensor, classes: torch.Tensor, scale_free: bool) -> float:
        def nll(params):
            theta, log_beta = params[:-1], params[-1] if scale_free else torch.zeros((), dtype=params.dtype)
            mix = torch.zeros(len(gids), utility.shape[1], dtype=utility.dtype).index_add(0, gt, influence(theta)[:, None] * utility[ut])
            logits = mix * log_beta.exp() if scale_free else mix / TEMPERATURE
            return -image_log_prob(logits, rows, classes, size, len(cls)).sum() + 0.5 * reg * (theta**2).sum()
        params = fit_map(torch.zeros(len(member_index) + 1, dtype=torch.float64), nll)
        return within_group_spearman(influence(params[:-1]).numpy(), truth, group)

    out = {"pagerank_alone": within_group_spearman(z_pr.numpy(), truth, group), "map_reg": reg}
    for name, train_only in (("true_tastes_all_group_clicks", False), ("true_tastes_train_group_clicks", True)):
        out[name] = learn(true_utility, *clicks(train_only), scale_free=False)
    step1 = step1_class_utility(paths.graph, cls)
    estimated = torch.tensor(np.stack([step1[f"ind:{u}"] for u in sorted(member_index)]), dtype=torch.float64)
    estimated = (estimated - estimated.mean(1, keepdim=True)) / estimated.std()
    out["step1_tastes_train_group_clicks"] = learn(estimated, *clicks(True), scale_free=True)
    attention = pl.read_parquet(paths.graph / "attention.parquet")
    learned = dict(zip(zip(attention["group_segment_id"], attention["member_segment_id"]), attention["attention"]))
    out["step1_attention"] = within_group_spearman(np.array([learned[(f"grp:{g}", f"ind:{u}")] for g, u in zip(gm["group_id"], gm["member_id"])]), truth, group)
    return out


def step1_class_utility(folder: Path, cls: dict[str, int]) -> dict[str, np.ndarray]:
    """Step 1's estimated taste of every segment over the classes (its model in `folder`): its score averaged over the train images of each."""
    vectors, segments = load_file(folder / "vectors.safetensors"), pl.read_parquet(folder / "segments.parquet")
    item_class = torch.tensor([cls[i] for i in pl.read_parquet(folder / "items.parquet")["image_id"]])
    scores = (vectors["p"] @ vectors["project"].T) @ vectors["items"].T
    count = torch.zeros(render.N_CLASSES).index_add(0, item_class, torch.ones(len(item_class)))
    utility = torch.zeros(len(scores), render.N_CLASSES).index_add(1, item_class, scores) / count.clamp_min(1)
    return dict(zip(segments["segment_id"], utility.numpy()))


def structured_utility(theta: torch.Tensor) -> torch.Tensor:
    a, b, c_ = N_H, N_H + N_P, N_H + N_P + N_S
    hue, pattern, shape, combo = theta[:, :a], theta[:, a:b], theta[:, b:c_], theta[:, c_:].reshape(-1, N_H, N_S)
    return (hue[:, :, None, None] + pattern[:, None, :, None] + shape[:, None, None, :] + combo[:, :, None, :]).reshape(len(theta), -1)


def cold_start_study(paths: Paths) -> dict:
    truth_dir = paths.truth
    ind, images = pl.read_parquet(truth_dir / "individuals.parquet"), pl.read_parquet(truth_dir / "images.parquet")
    cls, index = class_of(images), {u: k for k, u in enumerate(ind["individual_id"])}
    split = pl.read_parquet(paths.split)
    train_images = split.filter(pl.col("split") == "train")["image_id"].to_list()
    size = torch.tensor(np.bincount([cls[i] for i in train_images], minlength=render.N_CLASSES), dtype=torch.float64)
    events = training_events(paths.tables, paths.split).collect()
    events = events.filter(pl.col("type").is_in(INDIVIDUAL_TYPES) & pl.col("actor_id").is_in(list(index)))
    rows, classes = torch.tensor([index[a] for a in events["actor_id"]]), torch.tensor([cls[b] for b in events["target_id"]])
    true = Tastes.from_flat(np.stack(ind["taste"].to_numpy()))
    assert np.allclose(structured_utility(torch.tensor(true.flat())).numpy(), true.class_utility().reshape(len(ind), -1))

    def fit(width: int, utility, prior_sd: torch.Tensor) -> np.ndarray:
        centre = torch.zeros(len(ind), width, dtype=torch.float64)
        for _ in range(4):  # empirical Bayes: the prior's centre is the mean of the last fit
            def nll(theta, centre=centre):
                ll = image_log_prob(utility(theta) / TEMPERATURE, rows, classes, size, len(train_images)).sum()
                return -ll + 0.5 * (((theta - centre) / prior_sd) ** 2).sum()
            theta = fit_map(centre, nll)
            centre = theta.mean(0, keepdim=True).expand(len(ind), -1).clone()
        return utility(theta).numpy()

    structured_sd = torch.tensor([0.6] * N_H + [0.5] * N_P + [0.5] * N_S + [1.0] * (N_H * N_S), dtype=torch.float64)
    task = cold_task(ranking.segment_interactions(scan_parts(paths.tables / c.EVENTS_DIR, c.EVENTS_SCHEMA).collect()), split)
    task = restrict(task, [k for k, s in enumerate(task.segments) if s.startswith("ind:")])
    who, cold_classes = np.array([index[s[4:]] for s in task.segments]), np.array([cls[i] for i in task.cold_ids])

    def auc(utility: np.ndarray) -> dict[str, float]:
        return {half: summarise_auc(restrict(task, rows), utility[who[rows]][:, cold_classes], "a")["a"]
                for half, rows in rows_by_half(task.segments).items()}

    return {"individuals": len(who), "true_tastes": auc(true.class_utility().reshape(len(ind), -1)),
            "structured_map": auc(fit(48, structured_utility, structured_sd)),
            "free_class_map": auc(fit(render.N_CLASSES, lambda t: t, torch.full((render.N_CLASSES,), 1.0, dtype=torch.float64)))}


def influence_refit_study(cfg: TrainGraphConfig, paths: Paths, prec: float) -> dict:
    from torch_geometric.utils import scatter, softmax

    ix = stage_data.load_for(cfg, paths)
    data, vectors = ix.data, load_file(paths.graph / "vectors.safetensors")
    tastes = (vectors["p"][data.n_groups :] @ vectors["project"].T).double()  # rows follow ix.users, as segments.parquet does
    items = vectors["items"].double()
    group, user = torch.as_tensor(data.members[:, 0]), torch.as_tensor(data.members[:, 1])
    features = torch.as_tensor(data.features, dtype=torch.float64)
    fit_rows, held = map(torch.as_tensor, carve_validation(data.group_items, np.random.default_rng(0)))  # one click per group of >= 2
    gm = pl.read_parquet(paths.truth / "group_members.parquet")
    truth = dict(zip(zip(gm["group_id"], gm["member_id"]), gm["influence"]))
    true_influence = np.array([truth[(ix.groups[g], ix.users[u])] for g, u in data.members.tolist()])

    def fit(columns: list[int], persuasion: bool) -> dict:
        # theta = [a (one weight per column), log scale, b (one persuasiveness per individual, if fitted)]
        n_a = len(columns)

        def attention(theta):
            logits = features[:, columns] @ theta[:n_a] + (theta[n_a + 1 :][user] if persuasion else 0)
            return softmax(logits, group, num_nodes=data.n_groups)

        def click_nll(theta, rows):
            mix = scatter(attention(theta)[:, None] * tastes[user], group, dim=0, dim_size=data.n_groups, reduce="sum")
            logits = theta[n_a].exp() * mix[rows[:, 0]] @ items.T
            return torch.nn.functional.cross_entropy(logits, rows[:, 1], reduction="sum")

        size = n_a + 1 + (data.n_users if persuasion else 0)
        theta = fit_map(torch.zeros(size, dtype=torch.float64),
                        lambda t: click_nll(t, fit_rows) + 0.5 * prec * (t[n_a + 1 :] ** 2).sum())
        with torch.no_grad():
            return {"heldout_nll": float(click_nll(theta, held)),
                    "spearman": within_group_spearman(attention(theta).numpy(), true_influence, data.members[:, 0])}

    names = ix.data.feature_names
    rows = {f"{name} + b": fit([k], True) for k, name in enumerate(names)}
    rows["all features + b"] = fit(list(range(len(names))), True)
    rows["all features"] = fit(list(range(len(names))), False)
    rows["pagerank"] = fit([names.index("pagerank")], False)
    chosen = min(rows, key=lambda k: rows[k]["heldout_nll"])
    return {"prior_precision": prec, "heldout_clicks": len(held), "chosen_by_heldout_nll": chosen,
            "chosen_spearman": rows[chosen]["spearman"], "fits": rows}


def trained_step1(params: dict, root: Path) -> tuple[TrainGraphConfig, Paths]:
    """The train_graph stage's typed config and the pipeline's catalogue, its relative paths taken from `root` as the stages' are."""
    return section(params, TrainGraphConfig, "train_graph"), Paths.from_params(params).rooted(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="a checkout whose params.yaml and data/ hold a trained world-v1 pipeline")
    parser.add_argument("--reg", type=float, default=3.0, help="prior precision of persuasiveness in the Step 1-tastes learner")
    parser.add_argument("--refit-prec", type=float, default=10.0, help="prior precision of persuasiveness in the influence refit")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PREFGEN_THREADS", "1")))
    json_path = args.json.resolve() if args.json else None
    cfg, paths = trained_step1(load_params(args.root / "params.yaml"), args.root)
    result = {"influence": influence_study(paths, args.reg),
              "influence_refit": influence_refit_study(cfg, paths, args.refit_prec),
              "cold_start": cold_start_study(paths)}
    print(json.dumps(result, indent=2))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
