"""GramStyle: seeded and fixed, texture rather than position, differentiable, any size >= 8."""

from __future__ import annotations

import pytest
import torch

from prefgen.vision.style import GramStyle, StyleConfig

torch.set_num_threads(1)


def stripes(size: int = 32, period: int = 8, offset: int = 0) -> torch.Tensor:
    """Horizontal grey stripes, 0.25 and 0.75 (mean 0.5), shifted down by `offset` rows."""
    rows = ((torch.arange(size) + offset) % period < period // 2).float()
    grey = 0.25 + 0.5 * rows.view(size, 1).expand(size, size)
    return grey.expand(1, 3, size, size).clone()


def dots(size: int = 32, period: int = 8) -> torch.Tensor:
    """Square dots of 1.0 on 1/4 of the area, background 1/3: mean 0.5, as the stripes."""
    line = torch.arange(size) % period < period // 2
    on = (line.view(size, 1) & line.view(1, size)).float()
    grey = 1.0 / 3.0 + (2.0 / 3.0) * on
    return grey.expand(1, 3, size, size).clone()


def test_shape_norm_and_dtype():
    module = GramStyle()
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = module(pixels)
    assert out.shape == (3, 64) == (3, module.dim)
    assert out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_same_seed_same_function_other_seed_another():
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    first, again = GramStyle(StyleConfig(seed=0)), GramStyle(StyleConfig(seed=0))
    other = GramStyle(StyleConfig(seed=1))
    assert torch.equal(first(pixels), again(pixels))
    assert not torch.allclose(first(pixels), other(pixels), atol=1e-3)


def test_weights_are_fixed_buffers():
    module = GramStyle()
    assert list(module.parameters()) == []
    buffers = dict(module.named_buffers())
    assert set(buffers) == {"conv0", "conv1", "conv2", "projection"}
    assert buffers["conv1"].shape == (32, 16, 3, 3)
    assert buffers["projection"].shape == (64, 16 * 17 // 2 + 2 * (32 * 33 // 2))
    assert not any(b.requires_grad for b in buffers.values())


@pytest.mark.parametrize("size", [32, 64])
def test_texture_not_position(size):
    module = GramStyle()
    shifted = torch.cat([stripes(size, offset=offset) for offset in range(1, 8)])  # every phase of period 8
    images = torch.cat([stripes(size), dots(size), shifted])
    assert torch.allclose(images.mean(dim=(1, 2, 3)), torch.full((9,), 0.5))
    striped, dotted, *others = module(images)
    texture_distance = (striped - dotted).norm().item()
    shift_distance = max((striped - other).norm().item() for other in others)
    assert texture_distance > 3 * shift_distance, (texture_distance, shift_distance)


def test_orientation_is_texture():
    module = GramStyle()
    horizontal = stripes(32)
    striped, vertical, shifted = module(torch.cat([horizontal, horizontal.transpose(2, 3), stripes(32, offset=2)]))
    assert (striped - vertical).norm() > 3 * (striped - shifted).norm()


def test_flat_images_have_no_style_and_faint_ones_little():
    module = GramStyle()
    flat = torch.stack([torch.full((3, 16, 16), 0.2), torch.tensor([0.9, 0.1, 0.4]).view(3, 1, 1).expand(3, 16, 16)])
    flat.requires_grad_()
    out = module(flat)
    assert out.abs().max() < 1e-5  # covariances: colour alone is no texture
    out.sum().backward()
    assert torch.isfinite(flat.grad).all()
    faint = 0.5 + 1e-3 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    assert 0 < module(faint).norm() < 0.5


def test_gradient_is_finite_and_nonzero():
    module = GramStyle()
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)).requires_grad_()
    target = torch.randn(2, module.dim, generator=torch.Generator().manual_seed(3))
    (module(pixels) * target).sum().backward()
    assert torch.isfinite(pixels.grad).all()
    assert pixels.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [8, 32, 64, 37])
def test_any_size_from_8(size):
    out = GramStyle()(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)))
    assert out.shape == (1, 64)
    assert torch.isfinite(out).all()


def test_too_small_is_an_error():
    with pytest.raises(ValueError, match="H, W >= 8"):
        GramStyle()(torch.rand(1, 3, 4, 16))
    with pytest.raises(ValueError, match="H, W >= 17"):
        GramStyle(StyleConfig(channels=(8, 8, 8, 8, 8)))(torch.rand(1, 3, 16, 16))
    assert GramStyle(StyleConfig(channels=(8, 8, 8, 8, 8)))(torch.rand(1, 3, 17, 17)).shape == (1, 64)
