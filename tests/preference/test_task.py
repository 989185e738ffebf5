"""Step 1's core task: an epoch's batches, the negatives, the resume key."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from prefgen.preference.task import EncoderTask, EpochLines, negatives
from prefgen.training.core import Schedule
from tests.preference.test_train import CFG, planted


def lines(n: int, kind: int) -> torch.Tensor:
    return torch.stack([torch.full((n,), kind), torch.arange(n)], dim=1)


def test_an_epoch_holds_every_line_once_with_the_group_lines_spread_over_the_batches():
    dataset = EpochLines(lines(10, 0), lines(7, 1), batch_size=4)  # 3 batches of 4, 4, 2 lines; group lines 3, 3, 1
    batches = [dataset.__getitems__(list(range(start, min(start + 4, 10)))) for start in (0, 4, 8)]
    assert [len(users) for users, _ in batches] == [4, 4, 2] and [len(groups) for _, groups in batches] == [3, 3, 1]
    assert torch.equal(torch.cat([users for users, _ in batches]), lines(10, 0))
    assert torch.equal(torch.cat([groups for _, groups in batches]), lines(7, 1))


def test_a_batch_taken_in_two_halves_holds_the_lines_of_the_whole():
    """As two processes take a global batch: each half carries its share of the batch's group lines, none twice."""
    dataset = EpochLines(lines(12, 0), lines(30, 1), batch_size=6)
    whole = dataset.__getitems__(list(range(6, 12)))
    halves = [dataset.__getitems__(list(range(6, 9))), dataset.__getitems__(list(range(9, 12)))]
    assert [len(groups) for _, groups in halves] == [7, 8]
    for part in (0, 1):
        assert torch.equal(torch.cat([half[part] for half in halves]), whole[part])


def test_the_epoch_order_depends_on_seed_and_epoch_only():
    data = planted()
    make = lambda seed: EncoderTask(data, {}, replace(CFG, seed=seed), Schedule(3, seed), "graph")  # noqa: E731
    first = [torch.cat([batch[0] for batch in make(0).batches(epoch)]) for epoch in (0, 1)]
    again = torch.cat([batch[0] for batch in make(0).batches(0)])
    other_seed = torch.cat([batch[0] for batch in make(1).batches(0)])
    assert torch.equal(first[0], again) and not torch.equal(first[0], first[1]) and not torch.equal(first[0], other_seed)
    assert sorted(map(tuple, first[1].tolist())) == sorted(map(tuple, data.user_items.tolist()))


def test_negatives_avoid_the_rows_own_positives_and_follow_the_epoch_generator():
    rows = torch.tensor([[0, 0], [0, 1], [1, 2]] * 20)
    known = torch.unique(rows[:, 0] * 4 + rows[:, 1])  # id 0 clicked items 0 and 1, id 1 item 2, of 4
    draw = lambda: negatives(rows, known, 4, SimpleNamespace(generator=torch.Generator().manual_seed(0)))  # noqa: E731
    neg = draw()
    assert not torch.isin(rows[:, 0] * 4 + neg, known).any()
    assert set(neg[rows[:, 0] == 0].tolist()) == {2, 3} and set(neg[rows[:, 0] == 1].tolist()) == {0, 1, 3}
    assert torch.equal(neg, draw())


def test_the_resume_key_leaves_out_what_only_lengthens_or_follows_the_epochs():
    data = planted()
    key = lambda **change: EncoderTask(data, {}, replace(CFG, **change), Schedule(3), "graph").resume_key()  # noqa: E731
    assert key() == key(max_epochs=50, patience=2, threads=2, refit=True, social_smoothing=[0.0, 0.5], profile="quality")
    assert key() != key(lr=CFG.lr / 2) and key() != key(batch_size=32)
    val = {"user": np.array([[0, 0]])}
    assert key() != EncoderTask(data, val, CFG, Schedule(3), "graph").resume_key()
