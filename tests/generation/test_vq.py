"""Step 3.1's VQ autoencoder: tiny seeded diffusers VQModels on CPU."""

from dataclasses import replace

import pytest
import torch
from torch.utils.data import TensorDataset

from prefgen.generation import vq
from prefgen.training.config import TrainerConfig
from tests.generation.tiny import VQ

CPU = TrainerConfig(device="cpu")


def quiet(_: str) -> None:
    pass


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def squares(n: int = 24, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Flat-coloured images with a lighter square: structure a small VQ can learn in a few epochs."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 1, 1, generator=gen).expand(n, 3, size, size).clone()
    for i in range(n):
        x, y = torch.randint(0, size // 2, (2,), generator=gen).tolist()
        images[i, :, y : y + size // 2, x : x + size // 2] = 1.0
    return images


def test_latent_grid_and_reconstruction_shapes():
    model = vq.build_vq(VQ)
    recon, loss, indices = vq.reconstruct(model, squares(4))
    assert model.encode(squares(4)).latents.shape == (4, VQ.latent_channels, 8, 8)  # two blocks: one halving
    assert recon.shape == (4, 3, 16, 16) and loss.ndim == 0 and indices.shape == (4, 64)
    assert int(indices.max()) < VQ.num_vq_embeddings


def test_psnr_and_codebook_usage_on_known_values():
    pixels = torch.full((2, 3, 4, 4), 0.5)
    assert vq.psnr(pixels, (pixels + 0.1) * 2 - 1) == pytest.approx(20.0, abs=1e-3)  # error 0.1 -> 20 dB
    usage = vq.codebook_usage(torch.tensor([0, 0, 1, 1]), size=4)
    assert usage == pytest.approx({"codebook_usage": 0.5, "codebook_perplexity": 2.0})


def test_dead_codes_move_onto_encoder_outputs():
    model = vq.build_vq(VQ)
    latents = torch.randn(2, VQ.latent_channels, 8, 8)
    counts = torch.ones(VQ.num_vq_embeddings, dtype=torch.long)
    counts[[3, 5]] = 0
    moved = vq._restart_dead_codes(model, counts, latents, torch.Generator().manual_seed(0))
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, VQ.latent_channels)
    for code in (3, 5):
        assert (model.quantize.embedding.weight[code] == vectors).all(dim=1).any()
    assert moved == 2


def test_training_improves_reconstruction_and_is_deterministic():
    images, val = squares(32), squares(8, seed=1)
    model, history = vq.fit_vq(images, val, VQ, CPU, log=quiet)
    again, _ = vq.fit_vq(images, val, VQ, CPU, log=quiet)
    assert history.epochs[-1]["val_psnr"] > history.epochs[0]["val_psnr"]
    assert same_weights(model, again)


def test_two_epochs_resumed_to_three_match_three_at_once(tmp_path):
    cfg = replace(VQ, lr_schedule="constant")  # under the cosine rate the number of epochs shapes every epoch
    images, val = squares(32), squares(8, seed=1)
    at_once, full = vq.fit_vq(images, val, cfg, CPU, log=quiet)
    vq.fit_vq(images, val, replace(cfg, epochs=2), CPU, tmp_path, log=quiet)
    lines = []
    resumed, history = vq.fit_vq(images, val, cfg, CPU, tmp_path, log=lines.append)
    assert lines[0].startswith("vq: resumed after epoch 1") and len(history.epochs) == 3
    assert sum(row["restarted_codes"] for row in full.epochs) > 0  # the restart's draws are part of what resumes
    assert same_weights(at_once, resumed)
    assert [row["val_psnr"] for row in history.epochs] == [row["val_psnr"] for row in full.epochs]


def test_a_cosine_run_of_another_length_starts_afresh(tmp_path):
    images, val = squares(16), squares(4, seed=1)
    vq.fit_vq(images, val, replace(VQ, epochs=1), CPU, tmp_path, log=quiet)
    lines = []
    vq.fit_vq(images, val, replace(VQ, epochs=2), CPU, tmp_path, log=lines.append)
    assert not any("resumed" in line for line in lines)


def test_a_saved_model_loads_from_its_local_folder_only(tmp_path):
    model = vq.build_vq(VQ)
    vq.save_vq(model, tmp_path / "vq")
    loaded = vq.load_vq(tmp_path / "vq")
    assert sorted(p.name for p in (tmp_path / "vq").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    with torch.no_grad():
        assert torch.equal(vq.reconstruct(model.eval(), squares(2))[0], vq.reconstruct(loaded, squares(2))[0])
    with pytest.raises(FileNotFoundError, match="no VQModel here"):
        vq.load_vq(tmp_path / "missing")


def test_the_rate_decays_on_a_cosine_per_epoch_whatever_the_accumulation():
    cfg = replace(VQ, epochs=4, lr=0.01)
    assert [vq.epoch_lr(cfg, e) for e in range(4)] == pytest.approx([0.01, 0.0085502, 0.00505, 0.0015498], rel=1e-4)
    assert vq.epoch_lr(replace(cfg, lr_schedule="constant"), 3) == 0.01
    # 40 images at batch 8 are 5 batches: 3 optimiser steps an epoch, the last of one batch. A rate that ran
    # one step ahead or behind would put another epoch's rate into a batch's mean; float32 means round at 1e-7.
    _, history = vq.fit_vq(squares(40), squares(4, seed=1), cfg, replace(CPU, grad_accum_steps=2), log=quiet)
    assert [row["lr"] for row in history.epochs] == pytest.approx([vq.epoch_lr(cfg, e) for e in range(4)], rel=1e-6)


@pytest.mark.parametrize("keep_best", [True, False])
def test_the_kept_epoch_is_the_best_validation_or_the_last(keep_best):
    cfg = replace(VQ, epochs=4, lr=0.03, lr_schedule="constant", keep_best=keep_best)
    noise = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # unlike the squares: val PSNR peaks early
    model, history = vq.fit_vq(squares(32), noise, cfg, CPU, log=quiet)
    best = max(range(4), key=lambda e: (history.epochs[e]["val_psnr"], -e))
    assert history.best_epoch == best < 3
    assert history.kept_epoch(vq.vq_schedule(cfg)) == (best if keep_best else 3)
    kept_psnr = history.epochs[best if keep_best else 3]["val_psnr"]
    assert vq.evaluate(model, noise)["psnr"] == pytest.approx(kept_psnr, abs=1e-6)


def test_uint8_items_train_as_their_pixels_do():
    """A Dataset of (uint8 image, row) items, as an image store streams them, trains as the pixels `image / 255` do."""
    images, val = (torch.round(squares(n, seed=seed) * 255).to(torch.uint8) for n, seed in ((16, 0), (4, 1)))
    items, val_items = (TensorDataset(x, torch.arange(len(x))) for x in (images, val))
    cfg = replace(VQ, epochs=2)
    streamed, history = vq.fit_vq(items, val_items, cfg, CPU, log=quiet)
    in_memory, reference = vq.fit_vq(images.float() / 255, val.float() / 255, cfg, CPU, log=quiet)
    assert same_weights(streamed, in_memory)
    assert [row["val_psnr"] for row in history.epochs] == [row["val_psnr"] for row in reference.epochs]
    in_batches_of_three = vq.evaluate(streamed, val_items, batch_size=3)
    assert in_batches_of_three == pytest.approx(vq.evaluate(streamed, val.float() / 255), abs=1e-5)
