"""Step 3.2's W: it must recover a planted map into the text space, and beat the mean-vector floor."""

from dataclasses import replace

import torch
import torch.nn.functional as F

from prefgen.generation.conditioning import PreferenceToText, fit_w, mean_cosine, preference_prototype
from prefgen.generation.config import TrainWConfig
from prefgen.training.config import TrainerConfig

CFG = TrainWConfig(hidden=32, max_epochs=300, patience=30)
CPU = TrainerConfig(device="cpu")


def quiet(_: str) -> None:
    pass


def planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    e = torch.randn(n, 8, generator=gen) * 3 + 1  # unstandardised on purpose: W standardises its input
    mix = torch.randn(8, 16, generator=torch.Generator().manual_seed(99))
    return e, F.normalize(torch.tanh(e @ mix), dim=-1)


def test_w_recovers_a_planted_map_better_than_the_mean_vector():
    (e, s), (val_e, val_s) = planted(400, 0), planted(100, 1)
    w, history = fit_w(e, s, val_e, val_s, CFG, CPU, log=quiet)
    with torch.no_grad():
        val = mean_cosine(w(val_e), val_s)
    floor = mean_cosine(F.normalize(s.mean(0, keepdim=True), dim=-1).expand_as(val_s), val_s)
    assert val == history.best_score == max(r["val_cosine"] for r in history.epochs)  # the best epoch is kept
    assert val > 0.8 > floor + 0.5  # floor: ~0.22


def test_w_is_seeded_and_its_output_is_unit_length():
    (e, s), (val_e, val_s) = planted(100, 0), planted(20, 1)
    cfg = replace(CFG, max_epochs=20)
    a, _ = fit_w(e, s, val_e, val_s, cfg, CPU, log=quiet)
    b, _ = fit_w(e, s, val_e, val_s, cfg, CPU, log=quiet)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with torch.no_grad():
        assert torch.allclose(a(val_e).norm(dim=1), torch.ones(20))
    assert PreferenceToText(8, 16)(torch.zeros(3, 8)).shape == (3, 16)


def test_w_stops_once_patience_epochs_pass_without_a_better_validation_cosine():
    (e, s), (val_e, val_s) = planted(40, 0), planted(100, 1)  # few train rows: validation peaks, then W overfits
    cfg = TrainWConfig(hidden=32, lr=0.01, max_epochs=300, patience=5)
    _, history = fit_w(e, s, val_e, val_s, cfg, CPU, log=quiet)
    cosines = [r["val_cosine"] for r in history.epochs]
    assert len(cosines) < cfg.max_epochs and len(cosines) - 1 - history.best_epoch == cfg.patience
    assert max(cosines[history.best_epoch + 1 :]) <= cosines[history.best_epoch] == history.best_score


def test_the_prompt_turns_the_prototype_to_the_segments_favourite_among_images_that_show_it():
    catalogue = torch.eye(3)  # image 0 shows a circle, images 1 and 2 a star
    taste = torch.tensor([[0.9, 0.5, 0.1]])  # the segment likes image 0 best, then image 1
    star = torch.tensor([-20.0, 0.0, 0.0])  # CLIP's log-odds of each image given "a star"
    plain = preference_prototype(taste, catalogue, tau=0.1)
    prompted = preference_prototype(taste, catalogue, tau=0.1, prompt_logits=star)
    assert plain.argmax() == 0 and prompted.argmax() == 1
    assert prompted[0, 0] < 1e-6 and torch.allclose(prompted.sum(), torch.tensor(1.0))
    assert torch.equal(preference_prototype(taste, catalogue, 0.1, torch.zeros(3)), plain)  # a flat prompt changes nothing
