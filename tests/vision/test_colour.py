"""ColourHistogram and rgb_to_lab: known Lab values, normalisation, soft -> hard, gradients."""

from __future__ import annotations

import pytest
import torch

from prefgen.vision.colour import ColourConfig, ColourHistogram, rgb_to_lab

torch.set_num_threads(1)


def flat_image(rgb: tuple[float, float, float], size: int = 8) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


@pytest.mark.parametrize(
    ("rgb", "lab"),
    [
        ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),
        ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
        ((128 / 255, 128 / 255, 128 / 255), (53.59, 0.0, 0.0)),  # #808080: the gamma and the cube root
        ((0.02, 0.02, 0.02), (1.40, 0.0, 0.0)),  # the linear segments of both (903.3 * 0.02 / 12.92)
    ],
)
def test_rgb_to_lab_known_colours(rgb, lab):
    got = rgb_to_lab(flat_image(rgb, size=2))[0, :, 0, 0]
    assert got.dtype == torch.float32
    assert torch.allclose(got, torch.tensor(lab), atol=0.5), got


def test_rgb_to_lab_gradient_is_finite_at_black_and_white():
    pixels = torch.cat([flat_image((0.0, 0.0, 0.0), 2), flat_image((1.0, 1.0, 1.0), 2)]).requires_grad_()
    rgb_to_lab(pixels).sum().backward()
    assert torch.isfinite(pixels.grad).all()


def test_shape_dim_and_each_part_sums_to_one():
    module = ColourHistogram()
    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for feature in (module(pixels), module.hard(pixels)):
        assert feature.shape == (3, 68) == (3, module.dim)
        assert feature.dtype == torch.float32
        assert torch.allclose(feature[:, :64].sum(dim=1), torch.ones(3), atol=1e-5)
        assert torch.allclose(feature[:, 64:].sum(dim=1), torch.ones(3), atol=1e-5)


def test_red_and_blue_land_in_different_chroma_bins():
    module = ColourHistogram()
    images = torch.cat([flat_image((1.0, 0.0, 0.0)), flat_image((0.0, 0.0, 1.0))])
    for feature in (module(images), module.hard(images)):
        red_bin, blue_bin = feature[:, :64].argmax(dim=1).tolist()
        assert red_bin != blue_bin
    # Red (a, b) = (80, 67): cell (7, 6) of the 8x8 grid over [-100, 100]; blue (79, -108): cell (7, 0).
    assert module.hard(images)[:, :64].argmax(dim=1).tolist() == [7 * 8 + 6, 7 * 8 + 0]


def test_soft_tends_to_hard_as_bandwidth_shrinks():
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    narrow = ColourHistogram(ColourConfig(bandwidth=0.05))
    wide = ColourHistogram(ColourConfig(bandwidth=0.5))
    hard = narrow.hard(pixels)
    assert torch.equal(hard, wide.hard(pixels))  # the bins do not depend on the bandwidth
    narrow_gap = (narrow(pixels) - hard).abs().max().item()
    assert narrow_gap < 0.01
    assert (wide(pixels) - hard).abs().max().item() > 5 * narrow_gap  # the comparison has teeth


def test_soft_feature_has_a_finite_nonzero_gradient():
    module = ColourHistogram()
    pixels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)).requires_grad_()
    target = torch.rand(2, module.dim, generator=torch.Generator().manual_seed(3))
    (module(pixels) * target).sum().backward()
    assert torch.isfinite(pixels.grad).all()
    assert pixels.grad.abs().sum() > 0


def test_an_image_gets_the_same_feature_alone_in_any_batch_and_from_a_fresh_module():
    """No state in the module and no mixing across the batch: the feature is a function of the image alone."""
    module = ColourHistogram()
    pixels = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    batch = module(pixels)
    assert torch.allclose(batch[1:2], module(pixels[1:2]), atol=1e-6)
    assert torch.allclose(batch.flip(0), module(pixels.flip(0)), atol=1e-6)
    assert torch.equal(ColourHistogram()(pixels), batch)
    assert not torch.allclose(batch[0], batch[1])  # the images differ, so must their features
