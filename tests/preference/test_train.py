"""Step 1 encoder and its training through the core: tiny seeded models on the CPU."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch_geometric.utils import scatter

from prefgen.params import ConfigError
from prefgen.preference.config import TrainGraphConfig
from prefgen.preference.encoder import Graphs, SocialPreferenceEncoder, social_smoothing
from prefgen.preference.task import TrainData, _loss, build_graphs, score_rows, validate, validation_candidates
from prefgen.preference.train import History, carve_validation, fit, refit, train_for

CFG = TrainGraphConfig(dim=8, layers=2, batch_size=64, max_epochs=6, patience=10, eval_negatives=20, threads=1)


def planted(seed: int = 0) -> TrainData:
    """Two taste clusters: users and groups of cluster c click items of cluster c."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_groups = 40, 30, 8
    user_cluster, item_cluster = np.arange(n_users) % 2, np.arange(n_items) % 2
    pairs = [(u, i) for u in range(n_users) for i in rng.choice(np.flatnonzero(item_cluster == user_cluster[u]), 6, replace=False)]
    members = np.array([(g, u) for g in range(n_groups) for u in np.flatnonzero(user_cluster == g % 2)[g // 2 :: 4][:4]])
    group_pairs = [(g, i) for g in range(n_groups) for i in rng.choice(np.flatnonzero(item_cluster == g % 2), 5, replace=False)]
    features = rng.normal(size=(len(members), 3))
    return TrainData(n_users, n_items, n_groups, np.array(pairs), np.array(group_pairs), members, features)


def test_shapes_and_attention_normalised():
    data = planted()
    model = SocialPreferenceEncoder(data.n_users, data.n_items, data.n_groups, 3, dim=8, layers=2)
    graphs = build_graphs(data, use_centrality=True)
    groups, individuals, weight = model.segment_vectors(graphs)
    assert groups.shape == (8, 16) and individuals.shape == (40, 16) and weight.shape == (len(data.members),)
    sums = scatter(weight, graphs.member_group, dim_size=8, reduce="sum")
    assert torch.allclose(sums, torch.ones(8))


def test_ablation_without_influence_is_the_member_mean():
    data = planted()
    model = SocialPreferenceEncoder(data.n_users, data.n_items, data.n_groups, 3, dim=8, use_influence=False)
    graphs = build_graphs(data, use_centrality=True)
    _, _, weight = model.segment_vectors(graphs)
    assert torch.allclose(weight, torch.full_like(weight, 0.25))


@pytest.mark.parametrize("loss", [{"loss": "softmax"}, {"loss": "bpr"}, {"loss": "softmax", "pairwise_weight": 1.0}])
def test_training_is_deterministic_and_learns_the_planted_clusters(loss):
    data = planted()
    train, val = carve_validation(data.user_items, np.random.default_rng(0))
    data.user_items = train
    cfg = replace(CFG, **loss)
    model, graphs, history = fit(data, {"user": val}, cfg, log=lambda _: None)
    again, _, history2 = fit(data, {"user": val}, cfg, log=lambda _: None)
    assert [e["loss"] for e in history.epochs] == [e["loss"] for e in history2.epochs]
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    items = np.tile(np.arange(data.n_items), (4, 1))
    scores = score_rows(model, graphs, np.arange(4), items, "group")
    own = np.array([scores[g][np.arange(30) % 2 == g % 2].mean() for g in range(4)])
    other = np.array([scores[g][np.arange(30) % 2 != g % 2].mean() for g in range(4)])
    assert (own > other).all()


def test_the_pairwise_term_is_bpr_of_the_positive_against_the_drawn_negative():
    data = planted()
    model, graphs = SocialPreferenceEncoder(data.n_users, data.n_items, data.n_groups, 3, dim=8), build_graphs(data, True)
    torch.nn.init.normal_(model.click_gcn.embedding.weight)
    emb = model.embeddings(graphs)
    _, p_users, _ = model.segment_vectors(graphs, emb)
    rows, neg = torch.as_tensor(data.user_items[:16]), torch.arange(16) % data.n_items
    no_reg = torch.zeros(0, dtype=torch.long)
    softmax_only = _loss(model, p_users, emb["item"], rows, neg, no_reg, CFG)
    both = _loss(model, p_users, emb["item"], rows, neg, no_reg, replace(CFG, pairwise_weight=2.0))
    users, pos = rows[:, 0], rows[:, 1]
    difference = model.score(p_users[users], emb["item"][pos]) - model.score(p_users[users], emb["item"][neg])
    assert torch.allclose(both - softmax_only, 2.0 * -torch.nn.functional.logsigmoid(difference).mean(), atol=1e-5)


QUIET = {"log": lambda _: None}


def killed_then_resumed(train, folder, kill_after: str) -> tuple[list[str], SocialPreferenceEncoder, History]:
    """Run train(folder, log) until the log line starting with kill_after (the process dies right after that
    epoch's checkpoint), then run it again: (the second run's log lines, its model, its history)."""

    def killed(line: str) -> None:
        if line.startswith(kill_after):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(folder, killed)
    lines: list[str] = []
    model, _, history = train(folder, lines.append)
    return lines, model, history


def assert_same_run(a: tuple[SocialPreferenceEncoder, History], b: tuple[SocialPreferenceEncoder, History]) -> None:
    assert [e["loss"] for e in a[1].epochs] == [e["loss"] for e in b[1].epochs]
    assert a[1].best_epoch == b[1].best_epoch
    for key, value in a[0].state_dict().items():
        assert torch.equal(value, b[0].state_dict()[key]), key


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    data = planted()
    val = {"user": carve_validation(data.user_items, np.random.default_rng(1))[1]}
    full, _, history_full = fit(data, val, CFG, tmp_path / "a", **QUIET)
    lines, resumed, history_resumed = killed_then_resumed(lambda folder, log: fit(data, val, CFG, folder, log=log),
                                                          tmp_path / "b", "graph epoch 2/")
    assert lines[0] == f"graph: resumed after epoch 2 from {tmp_path / 'b'}"
    assert_same_run((full, history_full), (resumed, history_resumed))


@pytest.mark.parametrize("validated", [True, False])
def test_two_epochs_resumed_to_three_are_three_at_once(tmp_path, validated):
    """Asking a finished run for more epochs extends it, to the very weights of a run that asked for them at first."""
    data = planted()
    val = {"user": carve_validation(data.user_items, np.random.default_rng(1))[1]}
    if validated:
        train = lambda epochs, folder, log: fit(data, val, replace(CFG, max_epochs=epochs), folder, log=log)  # noqa: E731
    else:
        train = lambda epochs, folder, log: train_for(data, CFG, epochs, folder, log=log)  # noqa: E731
    once = train(3, None, lambda _: None)
    train(2, tmp_path, lambda _: None)
    lines: list[str] = []
    extended = train(3, tmp_path, lines.append)
    assert lines[0].endswith(f"resumed after epoch 1 from {tmp_path}") and len(extended[2].epochs) == 3
    assert_same_run((once[0], once[2]), (extended[0], extended[2]))


def test_the_best_epoch_is_kept_and_counted_from_zero():
    data = planted()
    val = {"user": carve_validation(data.user_items, np.random.default_rng(1))[1]}
    model, graphs, history = fit(data, val, CFG, **QUIET)
    scores = [e["val_score"] for e in history.epochs]
    assert history.best_epoch == scores.index(max(scores)) and history.best_score == max(scores)
    assert validate(model, graphs, validation_candidates(val, data.n_items, CFG))["val_score"] == max(scores)


def test_training_stops_once_patience_is_spent():
    data = planted()
    val = {"user": carve_validation(data.user_items, np.random.default_rng(1))[1]}
    _, _, history = fit(data, val, replace(CFG, max_epochs=40, patience=1), **QUIET)
    assert len(history.epochs) == history.best_epoch + 2 < 40


def test_refit_trains_the_chosen_epochs_with_the_chosen_beta_and_resumes_after_a_kill(tmp_path):
    data = planted()
    chosen = History(best_epoch=2, smoothing=0.4)
    full, _, history_full = refit(data, CFG, chosen, tmp_path / "a", **QUIET)
    assert len(history_full.epochs) == 3 and float(full.smoothing) == pytest.approx(0.4)
    lines, resumed, history_resumed = killed_then_resumed(lambda folder, log: refit(data, CFG, chosen, folder, log=log),
                                                          tmp_path / "b", "graph_refit epoch 1/")
    assert lines[0] == f"graph_refit: resumed after epoch 1 from {tmp_path / 'b'}"
    assert_same_run((full, history_full), (resumed, history_resumed))
    lines.clear()  # fewer epochs than the checkpoint holds: a run of its own, from scratch
    _, _, shorter = refit(data, CFG, History(best_epoch=1), tmp_path / "b", log=lines.append)
    assert not any("resumed" in line for line in lines) and len(shorter.epochs) == 2


@pytest.mark.parametrize("kind", ["user", "group"])
def test_carve_validation_holds_one_per_id_with_two(kind):
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 5], [2, 6], [2, 7]])
    train, val = carve_validation(pairs, np.random.default_rng(0))
    assert sorted(val[:, 0].tolist()) == [0, 2]
    assert len(train) + len(val) == len(pairs)


def test_carve_validation_holds_per_id_counts_and_leaves_each_id_a_line():
    pairs = np.array([[0, i] for i in range(6)] + [[1, 5], [1, 6]] + [[2, 7]] + [[3, 1], [3, 2], [3, 3]])
    train, val = carve_validation(pairs, np.random.default_rng(0), per_id=np.array([3, 3, 3, 0]))
    assert np.bincount(val[:, 0], minlength=4).tolist() == [3, 1, 0, 0]  # id 1 keeps one line; id 3 asked for none
    assert np.bincount(train[:, 0], minlength=4).tolist() == [3, 1, 1, 3]
    one_each = carve_validation(pairs, np.random.default_rng(0), per_id=np.ones(4, dtype=int))
    assert all(np.array_equal(a, b) for a, b in zip(one_each, carve_validation(pairs, np.random.default_rng(0))))


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path):
    data = planted()
    val = {"user": carve_validation(data.user_items, np.random.default_rng(1))[1]}
    fit(data, val, CFG, tmp_path, log=lambda _: None)
    smaller = planted()
    smaller.n_users -= 1
    smaller.user_items = smaller.user_items[smaller.user_items[:, 0] < smaller.n_users]
    smaller.members = smaller.members[smaller.members[:, 1] < smaller.n_users]
    smaller.features = smaller.features[: len(smaller.members)]
    lines: list[str] = []
    fit(smaller, {"user": val["user"][val["user"][:, 0] < smaller.n_users]}, CFG, tmp_path, log=lines.append)
    assert not any("resumed" in line for line in lines)


def test_settings_that_act_after_the_epochs_resume_the_training_and_others_start_afresh(tmp_path):
    """Turning the refit on, changing β's candidates or the thread count reuses the finished training; a new learning
    rate does not."""
    data = planted()
    val = {"user": carve_validation(data.user_items, np.random.default_rng(1))[1]}
    first = fit(data, val, CFG, tmp_path, log=lambda _: None)[2]
    lines: list[str] = []
    again = fit(data, val, replace(CFG, refit=True, social_smoothing=[0.0, 0.5], threads=2), tmp_path, log=lines.append)[2]
    assert lines[0] == f"graph: resumed after epoch {len(first.epochs) - 1} from {tmp_path}" and again.epochs == first.epochs
    lines.clear()
    fit(data, val, replace(CFG, lr=CFG.lr / 2), tmp_path, log=lines.append)
    assert not any("resumed" in line for line in lines)


def test_image_features_are_the_initial_image_embeddings():
    """Images that look alike start alike (METHOD.md 1.1): two unclicked images with equal features embed equally."""
    data = planted()
    data.n_items += 3  # three images nobody clicked: 30 and 31 look alike, 32 looks different
    cluster = np.arange(data.n_items) % 2
    data.item_features = np.eye(3, dtype=np.float32)[np.r_[cluster[:30], 0, 0, 2]]
    model = SocialPreferenceEncoder(data.n_users, data.n_items, data.n_groups, 3, dim=8, n_item_features=3)
    items = model.embeddings(build_graphs(data, use_centrality=True))["item"]
    assert torch.equal(items[30], items[31]) and not torch.allclose(items[30], items[32])
    trained, graphs, _ = train_for(data, CFG, epochs=3, log=lambda _: None)
    assert trained.item_proj is not None and trained.item_proj.weight.shape == (8, 3)
    items = trained.embeddings(graphs)["item"]
    assert torch.allclose(items[30], items[31])  # unclicked look-alikes stay alike after training


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    from prefgen.checkpoint import CheckpointError

    data = planted()
    train_for(data, CFG, epochs=1, checkpoint_dir=tmp_path, log=lambda _: None)
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:64])
    with pytest.raises(CheckpointError, match="checkpoint.safetensors: corrupt or truncated"):
        train_for(data, CFG, epochs=1, checkpoint_dir=tmp_path, log=lambda _: None)


def test_fit_without_validation_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="validation rows and got none; use train_for"):
        fit(planted(), {"user": np.zeros((0, 2), dtype=np.int64)}, CFG, log=lambda _: None)


def test_social_smoothing_moves_each_individual_towards_its_neighbours_mean():
    p = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [9.0, 9.0]])
    social = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]])  # 0 - 1 and 0 - 2, both directions; 3 follows nobody
    out = social_smoothing(p, social, 0.5)
    assert out.tolist() == [[0.5, 1.0], [1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]
    assert torch.equal(social_smoothing(p, social, 0.0), p)


def test_the_smoothing_is_chosen_on_validation_and_applied_to_individuals():
    data = planted()
    train, val = carve_validation(data.user_items, np.random.default_rng(0))
    data.user_items = train
    same_cluster = [(u, v) for u in range(data.n_users) for v in (u + 2, u + 4) if v < data.n_users]
    data.follows = np.array(same_cluster)
    model, graphs, history = fit(data, {"user": val}, replace(CFG, social_smoothing=[0.0, 0.5]), log=lambda _: None)
    assert set(history.smoothing_scores) == {"0.0", "0.5"}
    assert history.smoothing == max([0.0, 0.5], key=lambda b: history.smoothing_scores[str(b)])
    assert float(model.smoothing) == history.smoothing
    model.smoothing.fill_(0.5)
    _, smoothed, _ = model.segment_vectors(graphs)
    model.smoothing.fill_(0.0)
    _, raw, _ = model.segment_vectors(graphs)
    assert torch.allclose(smoothed, social_smoothing(raw, graphs.social, 0.5)) and not torch.allclose(smoothed, raw)


def test_without_image_offsets_only_images_lacking_features_keep_a_learned_id():
    """Images 0 and 1 look alike, 2 and 3 have no vector (zero rows): with no clicks, layer 0 is all there is."""
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    graphs = Graphs(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                    torch.zeros(0, dtype=torch.long), torch.zeros(0, 3), features)
    for offsets in (False, True):
        torch.manual_seed(0)
        model = SocialPreferenceEncoder(2, 4, 1, 3, dim=4, n_item_features=2, image_offsets=offsets)
        torch.nn.init.normal_(model.click_gcn.embedding.weight)  # non-zero δ for every image
        items = model.embeddings(graphs)["item"]
        assert torch.equal(items[0], items[1]) != offsets
        assert not torch.allclose(items[2], items[3])


@pytest.mark.parametrize(("change", "message"), [({"loss": "hinge"}, "loss: 'hinge'"),
                                                 ({"social_smoothing": [0.0, 1.0]}, "social_smoothing"),
                                                 ({"social_smoothing": []}, "social_smoothing"),
                                                 ({"pairwise_weight": -1.0}, "pairwise_weight"),
                                                 ({"loss": "bpr", "pairwise_weight": 1.0}, "with loss softmax only")])
def test_bad_training_settings_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        replace(CFG, **change)


def test_two_gloo_processes_train_step_1_near_one_process(tmp_path):
    """Data-parallel Step 1 runs (the full-graph pass goes through the wrapped forward) and lands near one process:
    not on it, as each process averages its own share of the batch's individual and group lines."""
    root = Path(__file__).resolve().parents[2]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    one = [sys.executable, "-m", "tests.preference.graph_ddp_worker", str(tmp_path / "one.safetensors"), "40"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "tests.preference.graph_ddp_worker", str(tmp_path / "two.safetensors"), "40"]
    for command in (one, two):
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    a, b = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 0.05
