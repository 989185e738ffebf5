"""Step 1's sampled softmax (`softmax_negatives`): its logits' shape, its agreement with the full softmax, its training."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from prefgen.params import ConfigError
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.encoder import SocialPreferenceEncoder
from prefgen.preference.task import _loss, build_graphs, sampled_logits, score_rows, shared_negatives
from prefgen.preference.train import carve_validation, fit
from tests.preference.test_train import CFG, planted


def scored_batch(rows: int = 16):
    """A model with spread-out embeddings, its propagated individual tastes and images, and a batch of rows."""
    data = planted()
    model, graphs = SocialPreferenceEncoder(data.n_users, data.n_items, data.n_groups, 3, dim=8), build_graphs(data, True)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.click_gcn.embedding.weight)
    emb = model.embeddings(graphs)
    _, p_users, _ = model.segment_vectors(graphs, emb)
    return model, p_users, emb["item"], torch.as_tensor(data.user_items[:rows]), data.n_items


def test_the_logits_are_batch_by_k_plus_one_with_the_positive_first_and_accidental_hits_masked():
    model, p_users, items, rows, _ = scored_batch()
    projected, pos = model.project(p_users[rows[:, 0]]), rows[:, 1]
    shared = torch.tensor([0, 5, 7, 11, 29])
    logits = sampled_logits(projected, items, pos, shared)
    assert logits.shape == (16, 6)
    assert torch.allclose(logits[:, 0], (projected * items[pos]).sum(-1))
    hits = shared[None, :] == pos[:, None]
    assert hits.any() and torch.isinf(logits[:, 1:][hits]).all() and torch.isfinite(logits[:, 1:][~hits]).all()


def test_with_every_image_as_a_negative_the_sampled_loss_is_the_full_softmax():
    model, p_users, items, rows, n_items = scored_batch()
    no_reg = torch.zeros(0, dtype=torch.long)
    neg = (rows[:, 1] + 1) % n_items
    for cfg in (CFG, replace(CFG, pairwise_weight=0.5)):
        full = _loss(model, p_users, items, rows, neg, no_reg, cfg)
        sampled = _loss(model, p_users, items, rows, neg, no_reg, cfg, shared=torch.arange(n_items))
        assert torch.allclose(full, sampled, atol=1e-5)


def test_the_shared_negatives_are_k_uniform_draws_of_the_epoch_generator_and_none_without_need():
    loop = lambda: SimpleNamespace(generator=torch.Generator().manual_seed(3), device=torch.device("cpu"))  # noqa: E731
    cfg = replace(CFG, softmax_negatives=10, softmax_full_max_items=20)
    drawn = shared_negatives(cfg, 30, loop())
    assert drawn.shape == (10,) and drawn.min() >= 0 and drawn.max() < 30 and torch.equal(drawn, shared_negatives(cfg, 30, loop()))
    assert shared_negatives(CFG, 30, loop()) is None and shared_negatives(cfg, 10, loop()) is None
    assert shared_negatives(cfg, 20, loop()) is None  # a catalogue the full softmax still fits


def test_the_sampled_softmax_trains_the_planted_clusters():
    data = planted()
    train, val = carve_validation(data.user_items, np.random.default_rng(0))
    data.user_items = train
    model, graphs, history = fit(data, {"user": val}, replace(CFG, softmax_negatives=8, softmax_full_max_items=0),
                                  log=lambda _: None)
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    scores = score_rows(model, graphs, np.arange(4), np.tile(np.arange(data.n_items), (4, 1)), "group")
    own = np.array([scores[g][np.arange(30) % 2 == g % 2].mean() for g in range(4)])
    other = np.array([scores[g][np.arange(30) % 2 != g % 2].mean() for g in range(4)])
    assert (own > other).all()


def test_softmax_negatives_need_the_softmax_loss():
    with pytest.raises(ConfigError, match="softmax_negatives"):
        TrainGraphConfig(loss="bpr", softmax_negatives=4)
