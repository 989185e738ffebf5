"""eval_mapper per half: a segment's AUC (over all cold images) counts in the half of its segment id only."""

import numpy as np

from prefgen.eval.mapper import figures_by_half
from prefgen.eval.reference import ColdTask, restrict
from prefgen.metrics.dev_test import half

SEGMENTS = [f"ind:u{k}" for k in range(6)] + [f"grp:g{k}" for k in range(6)]


def tiny_task() -> ColdTask:
    positives = np.zeros((len(SEGMENTS), 4), dtype=bool)
    positives[:, 0] = True  # every segment liked cold image c0, and no other
    return ColdTask(["c0", "c1", "c2", "c3"], SEGMENTS, [["t1"]] * len(SEGMENTS), positives)


def test_each_half_scores_its_own_segments_over_every_cold_image():
    task = tiny_task()
    in_dev = np.array([half(s) == "dev" for s in SEGMENTS])
    assert 0 < in_dev.sum() < len(SEGMENTS)  # both halves hold segments
    right, wrong = np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 1.0, 1.0, 1.0])
    scores = np.where(in_dev[:, None], right, wrong)  # c0 first for dev segments, last for test ones
    utility = np.tile([3.0, 2.0, 1.0, 0.0], (len(SEGMENTS), 1))
    figures = figures_by_half(task, scores, 1 - scores, np.full(scores.shape, 0.5), utility)
    assert (figures["dev_segments"], figures["test_segments"]) == (in_dev.sum(), (~in_dev).sum())
    assert (figures["dev"]["cold_auc"], figures["test"]["cold_auc"]) == (1.0, 0.0)
    assert (figures["dev"]["vbpr_cold_auc"], figures["test"]["vbpr_cold_auc"]) == (0.0, 1.0)
    assert figures["dev"]["random_cold_auc"] == figures["test"]["oracle_cold_auc"] - 0.5 == 0.5
    assert figures["dev"]["utility_spearman"] > 0 > figures["test"]["utility_spearman"]
    dev_only = restrict(task, np.flatnonzero(in_dev))
    alone = figures_by_half(dev_only, scores[in_dev], scores[in_dev], scores[in_dev], utility[in_dev])
    assert alone["test"] == {} and alone["test_segments"] == 0 and alone["dev"]["cold_auc"] == 1.0  # no segment, no figure


def test_restricting_a_task_keeps_the_cold_images_and_the_chosen_segments_rows():
    task = tiny_task()
    task.positives[3, 2] = True
    part = restrict(task, [3, 7])
    assert part.cold_ids == task.cold_ids and part.segments == ["ind:u3", "grp:g1"]
    assert part.positives.tolist() == [[True, False, True, False], [True, False, False, False]]
    assert restrict(task, []).positives.shape == (0, 4)
