"""Step 3.1's VQ autoencoder: tiny seeded diffusers VQModels on CPU."""

from dataclasses import replace

import pytest
import torch

from prefgen.generation import vq
from tests.generation.tiny import VQ


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
    model, history = vq.fit_vq(images, val, VQ, log=lambda _: None)
    again, _ = vq.fit_vq(images, val, VQ, log=lambda _: None)
    assert history.epochs[-1]["val_psnr"] > history.epochs[0]["val_psnr"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    images, val = squares(32), squares(8, seed=1)
    full, _ = vq.fit_vq(images, val, VQ, log=lambda _: None)

    def killer(line):
        if line.startswith("epoch   1"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        vq.fit_vq(images, val, VQ, tmp_path, log=killer)
    lines = []
    resumed, history = vq.fit_vq(images, val, VQ, tmp_path, log=lines.append)
    assert lines[0] == "resumed at epoch 2" and len(history.epochs) == VQ.epochs
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))


def test_a_saved_model_loads_from_its_local_folder_only(tmp_path):
    model = vq.build_vq(VQ)
    vq.save_vq(model, tmp_path / "vq")
    loaded = vq.load_vq(tmp_path / "vq")
    assert sorted(p.name for p in (tmp_path / "vq").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    with torch.no_grad():
        assert torch.equal(vq.reconstruct(model.eval(), squares(2))[0], vq.reconstruct(loaded, squares(2))[0])
    with pytest.raises(FileNotFoundError, match="no VQModel here"):
        vq.load_vq(tmp_path / "missing")


def test_the_rate_decays_on_a_cosine_and_the_best_validation_epoch_is_kept():
    cfg = replace(VQ, epochs=4, lr=0.01)
    assert [vq.epoch_lr(cfg, e) for e in range(4)] == pytest.approx([0.01, 0.0085502, 0.00505, 0.0015498], rel=1e-4)
    assert vq.epoch_lr(replace(cfg, lr_schedule="constant"), 3) == 0.01
    images, val = squares(32), squares(8, seed=1)
    model, history = vq.fit_vq(images, val, cfg, log=lambda _: None)
    best = vq.best_epoch(history)
    assert history.epochs[best]["val_psnr"] == max(e["val_psnr"] for e in history.epochs)
    assert vq.evaluate(model, val)["psnr"] == pytest.approx(history.epochs[best]["val_psnr"], abs=1e-6)
