"""`prefgen eval mapper`: Step 2's cold-start preference score on `cold` images only, from the real clicks; the
figures that need a synthetic world's truth (utility, oracle) only where the catalogue has one.

Protocol (the same as `ref_cold_auc`, prefgen/eval/reference.py): per segment
with at least one train interaction, AUC of its scores over all cold images,
positives the cold images it interacted with; the mean over segments.

    cold_auc           pref(g, x) = D(p_g, G(v(x)))                  (the mapper)
    vbpr_cold_auc      θ_g · E v + β' v, BPR on the same train pairs  (vision/vbpr.py)
    random_cold_auc    seeded uniform scores (≈ 0.5: the floor)
    utility_spearman   Spearman of pref(g, ·) with g's true utility over cold images, mean over segments
    oracle_cold_auc    the true utility as the score: the ceiling the click noise leaves

Each figure is written per half (prefgen/metrics/dev_test.py), a segment in the half of its segment id, its AUC
still over all cold images.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr

from prefgen.data import contract as c
from prefgen.data.tables import scan_parts
from prefgen.eval.reference import ColdTask, cold_task, restrict, summarise_auc
from prefgen.eval.truth import Truth, load_truth
from prefgen.metrics import ranking
from prefgen.metrics.dev_test import rows_by_half
from prefgen.paths import Paths
from prefgen.training.config import Training
from prefgen.vision import mapper_data
from prefgen.vision.config import TrainMapperConfig
from prefgen.vision.mapper import preference
from prefgen.vision.scorer import MAPPER_FILE, build_models
from prefgen.vision.train_mapper import fit
from prefgen.vision.vbpr import VBPRConfig, fit_vbpr


def true_utility(truth: Truth, segments: list[str], image_ids: list[str]) -> np.ndarray:
    """(segments, images) utility of each segment's true taste (individuals and groups)."""
    images = pl.DataFrame({"image_id": image_ids}).join(truth.images, on="image_id", how="left", maintain_order="left")
    attrs = [images[a].to_numpy() for a in ("hue", "pattern", "shape")]
    return truth.segment_tastes(segments).utility(*attrs)


def utility_spearman(scores: np.ndarray, utility: np.ndarray) -> float:
    rhos = [spearmanr(s, u).statistic for s, u in zip(scores, utility) if np.ptp(s) > 0 and np.ptp(u) > 0]
    return float(np.mean(rhos))


def _task(tables_dir: Path, split: Path) -> ColdTask:
    events = scan_parts(tables_dir / c.EVENTS_DIR, c.EVENTS_SCHEMA).collect()
    return cold_task(ranking.segment_interactions(events), pl.read_parquet(split))


@torch.no_grad()
def _mapper_scores(g, d, step1, task: ColdTask, cold_v: torch.Tensor) -> np.ndarray:
    rows = torch.as_tensor([step1.segment_row[s] for s in task.segments])
    return torch.cat([preference(g, d, step1.p[rows[i : i + 512]], cold_v) for i in range(0, len(rows), 512)]).numpy()


def _cold_features(cfg: TrainMapperConfig, features_dir: Path, task: ColdTask) -> torch.Tensor:
    ids, matrix = mapper_data.read_features(features_dir, cfg.part_names)
    row = {i: k for k, i in enumerate(ids)}
    missing = [i for i in task.cold_ids if i not in row]
    if missing:
        raise ValueError(f"{len(missing)} cold images have no visual features (e.g. {missing[:3]}); rerun visual_features")
    return torch.as_tensor(matrix[[row[i] for i in task.cold_ids]])


def evaluate(config: Training[TrainMapperConfig], paths: Paths, seed: int = 0, log=print) -> dict:
    """The stage's metrics: the trained mapper (paths.mapper) against VBPR (trained in memory on `config.trainer`'s
    device), random and the oracle."""
    cfg = config.model
    torch.set_num_threads(cfg.threads)  # one thread: the VBPR baseline is then bit-for-bit reproducible
    truth, task, step1, utility = _setup(paths)
    if not task.segments:
        raise ValueError(f"no segment Step 1 knows clicked a cold image (and a train one) in {paths.tables}: no cold-start AUC")
    cold_v = _cold_features(cfg, paths.visual, task)
    g, d = build_models(load_file(paths.mapper / MAPPER_FILE), cfg)
    scores = _mapper_scores(g, d, step1, task, cold_v)
    data, _ = mapper_data.load(cfg, step1, paths.visual, paths.tables, paths.split)
    vbpr = fit_vbpr(data, VBPRConfig(seed=seed), config.trainer, log=log)
    with torch.no_grad():
        vbpr_scores = vbpr(torch.as_tensor([step1.segment_row[s] for s in task.segments]), cold_v).numpy()
    random_scores = np.random.default_rng(seed).random(scores.shape)
    world = {"world": truth.world, "world_sha256": truth.world_sha256} if truth is not None else {}
    return world | {"segments": len(task.segments), "cold_images": len(task.cold_ids)} | \
        figures_by_half(task, scores, vbpr_scores, random_scores, utility)


def figures_by_half(task: ColdTask, scores: np.ndarray, vbpr_scores: np.ndarray, random_scores: np.ndarray,
                    utility: np.ndarray | None) -> dict:
    """{"dev": figures, "test": figures, "dev_segments": n, "test_segments": n}: each half's figures over its own
    segments (a segment by its id), every array (segments, cold) in the task's segment order; utility None where
    there is no ground truth (a platform): the figures from the clicks only."""
    out = {}
    for name, rows in rows_by_half(task.segments).items():
        out[name] = _figures(restrict(task, rows), scores[rows], vbpr_scores[rows], random_scores[rows],
                             None if utility is None else utility[rows])
        out[f"{name}_segments"] = len(rows)
    return out


def _figures(task: ColdTask, scores: np.ndarray, vbpr_scores: np.ndarray, random_scores: np.ndarray,
             utility: np.ndarray | None) -> dict:
    if not task.segments:
        return {}
    out = summarise_auc(task, scores, "cold_auc") | summarise_auc(task, vbpr_scores, "vbpr_cold_auc")
    out |= {"random_cold_auc": summarise_auc(task, random_scores, "r")["r"]}
    if utility is None:
        return out
    out |= {"oracle_cold_auc": summarise_auc(task, utility, "o")["o"]}
    return out | {"utility_spearman": utility_spearman(scores, utility), "vbpr_utility_spearman": utility_spearman(vbpr_scores, utility)}


def _setup(paths: Paths) -> tuple[Truth | None, ColdTask, mapper_data.Step1, np.ndarray | None]:
    """Truth, the cold task over segments Step 1 knows, Step 1's outputs, and the true utility (segments, cold); no
    truth and no utility where the catalogue has no world's truth (a platform's pipeline folder)."""
    truth = load_truth(paths.truth) if (paths.truth / "world.json").is_file() else None
    task, step1 = _task(paths.tables, paths.split), mapper_data.load_step1(paths.graph)
    task = restrict(task, [k for k, s in enumerate(task.segments) if s in step1.segment_row])
    return truth, task, step1, None if truth is None else true_utility(truth, task.segments, task.cold_ids)


ABLATIONS = {"full": {}, "no semantic": {"parts": "style,colour"}, "no style": {"parts": "semantic,colour"},
             "no colour": {"parts": "semantic,style"}, "L2 only (no adversarial terms)": {"adversarial": False}}


def ablations(config: Training[TrainMapperConfig], paths: Paths, log=print) -> list[dict]:
    """Retrain the mapper per variant (in memory, nothing written, on `config.trainer`'s device) and score it by the
    same protocol, per half: a feature choice reads the dev figures (the log line shows them), a report the test ones."""
    cfg = config.model
    torch.set_num_threads(cfg.threads)
    _, task, step1, utility = _setup(paths)
    halves = rows_by_half(task.segments)
    rows = []
    for name, change in ABLATIONS.items():
        variant = replace(cfg, **change)
        data, _ = mapper_data.load(variant, step1, paths.visual, paths.tables, paths.split)
        g, d, history = fit(data, variant, config.trainer, None, None, log=lambda line: None)
        scores = _mapper_scores(g, d, step1, task, _cold_features(variant, paths.visual, task))
        rows.append({"variant": name, "val_auc": history.best_score, "best_epoch": history.best_epoch}
                    | {half: _variant_figures(restrict(task, at), scores[at], None if utility is None else utility[at])
                       for half, at in halves.items()})
        log(f"{name:<32} val_auc {history.best_score:.4f}  dev cold_auc {rows[-1]['dev'].get('cold_auc', np.nan):.4f}  "
            f"dev utility_spearman {rows[-1]['dev'].get('utility_spearman', np.nan):.4f}")
    return rows


def _variant_figures(task: ColdTask, scores: np.ndarray, utility: np.ndarray | None) -> dict:
    if not task.segments:
        return {}
    auc = summarise_auc(task, scores, "cold_auc")
    return auc if utility is None else auc | {"utility_spearman": utility_spearman(scores, utility)}
