"""Step 2: a soft, differentiable colour histogram in CIE Lab.

sRGB pixels are converted to CIE Lab (D65 white), a space where Euclidean
distance roughly follows perceived colour difference, then binned twice:

    chroma  h_ab[i, j] = mean_p  k(a_p - c^a_i) k(b_p - c^b_j)   (ab_bins x ab_bins, joint)
    light   h_L[l]     = mean_p  k(L_p - c^L_l)                  (l_bins)

with k the per-pixel-normalised Gaussian kernel
k(x - c_i) = softmax_i( -(x - c_i)^2 / (2 (bandwidth * bin_width)^2) ).
Each part sums to 1 over the image; the feature is h_ab (flattened) ⊕ h_L,
so D = ab_bins**2 + l_bins. As bandwidth -> 0 the soft histogram tends to the
hard (nearest-centre) one, `ColourHistogram.hard`. The edge bins are open-ended:
a value beyond the range counts in the nearest edge bin, in both versions.

Args (ColourConfig):
    l_bins: bins of L over [0, 100] (default 4).
    ab_bins: bins of a and of b, each over [-ab_range, ab_range] (default 8).
    bandwidth: kernel standard deviation in bin widths (default 0.5).
    ab_range: half-width of the a and b axes (default 100.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# sRGB (linear) -> CIE XYZ, D65 white (IEC 61966-2-1), and the D65 reference white.
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_LAB_EPSILON = (6.0 / 29.0) ** 3  # CIE's switch from the cube root to its linear segment


def _srgb_to_linear(pixels: Tensor) -> Tensor:
    """The sRGB transfer function, inverted; the power branch is clamped so its gradient stays finite."""
    power = ((pixels.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4
    return torch.where(pixels <= 0.04045, pixels / 12.92, power)


def _lab_f(t: Tensor) -> Tensor:
    """CIE's f: a cube root, linear near 0 (so d/dt is finite at 0, unlike t**(1/3))."""
    cube_root = t.clamp_min(_LAB_EPSILON) ** (1.0 / 3.0)
    linear = t / (3.0 * (6.0 / 29.0) ** 2) + 4.0 / 29.0
    return torch.where(t > _LAB_EPSILON, cube_root, linear)


def rgb_to_lab(pixels: Tensor) -> Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) float32 CIE Lab: L in [0, 100], a and b about [-110, 100]."""
    linear = _srgb_to_linear(pixels.float())
    xyz = torch.einsum("ij,bjhw->bihw", _RGB_TO_XYZ.to(linear.device), linear)
    f_x, f_y, f_z = _lab_f(xyz / _D65_WHITE.to(linear.device).view(1, 3, 1, 1)).unbind(dim=1)
    return torch.stack([116.0 * f_y - 16.0, 500.0 * (f_x - f_y), 200.0 * (f_y - f_z)], dim=1)


@dataclass(frozen=True)
class ColourConfig:
    # 4 lightness levels (dark, mid-dark, mid-light, light), a choice: lightness is
    # one axis against chroma's two, so fewer bins keep its part small beside h_ab.
    l_bins: int = 4
    # 8 x 8 chroma cells of 25 Lab units: coarse enough that a 64x64 image fills a
    # stable histogram, fine enough to separate hues (red, orange, green, blue, ...).
    ab_bins: int = 8
    # Half a bin: neighbour bins get exp(-2) ~ 0.14 of a centred pixel's weight, so
    # gradients reach across bin edges without blurring the histogram flat.
    bandwidth: float = 0.5
    # a and b of sRGB colours lie within about [-110, 100]; +-100 keeps the bins on
    # the colours that occur, the open-ended edge bins take the few beyond.
    ab_range: float = 100.0


def _bin_centres(low: float, high: float, bins: int) -> Tensor:
    width = (high - low) / bins
    return low + width * (torch.arange(bins, dtype=torch.float32) + 0.5)


class ColourHistogram(nn.Module):
    """Soft Lab colour histogram: (B, 3, H, W) sRGB in [0, 1] -> (B, ab_bins**2 + l_bins) float32."""

    def __init__(self, config: ColourConfig | None = None):
        super().__init__()
        self.config = config = config or ColourConfig()
        self.ab_width = 2.0 * config.ab_range / config.ab_bins
        self.l_width = 100.0 / config.l_bins
        self.register_buffer("ab_centres", _bin_centres(-config.ab_range, config.ab_range, config.ab_bins))
        self.register_buffer("l_centres", _bin_centres(0.0, 100.0, config.l_bins))
        self.dim = config.ab_bins**2 + config.l_bins

    def _soft_assign(self, values: Tensor, centres: Tensor, width: float) -> Tensor:
        """(B, N) values -> (B, N, bins) kernel weights summing to 1 per value (softmax: no underflow to 0/0)."""
        distance = (values.unsqueeze(-1) - centres) / width
        return torch.softmax(-(distance**2) / (2.0 * self.config.bandwidth**2), dim=-1)

    def forward(self, pixels: Tensor) -> Tensor:
        """The soft histogram, differentiable w.r.t. pixels."""
        lightness, a, b = rgb_to_lab(pixels).flatten(2).unbind(dim=1)  # each (B, N)
        weight_a = self._soft_assign(a, self.ab_centres, self.ab_width)
        weight_b = self._soft_assign(b, self.ab_centres, self.ab_width)
        # The Gaussian is separable, so the joint (a, b) weights are the outer product of the marginals.
        chroma = torch.einsum("bni,bnj->bij", weight_a, weight_b).flatten(1) / a.shape[1]
        light = self._soft_assign(lightness, self.l_centres, self.l_width).mean(dim=1)
        return torch.cat([chroma, light], dim=1)

    @torch.no_grad()
    def hard(self, pixels: Tensor) -> Tensor:
        """The hard histogram of the same bins: each pixel counts in its nearest bin (no gradient)."""
        cfg = self.config
        lightness, a, b = rgb_to_lab(pixels).flatten(2).unbind(dim=1)
        index_a = ((a + cfg.ab_range) / self.ab_width).floor().long().clamp(0, cfg.ab_bins - 1)
        index_b = ((b + cfg.ab_range) / self.ab_width).floor().long().clamp(0, cfg.ab_bins - 1)
        index_l = (lightness / self.l_width).floor().long().clamp(0, cfg.l_bins - 1)
        chroma = F.one_hot(index_a * cfg.ab_bins + index_b, cfg.ab_bins**2).float().mean(dim=1)
        light = F.one_hot(index_l, cfg.l_bins).float().mean(dim=1)
        return torch.cat([chroma, light], dim=1)
