"""Step 2: style as Gram statistics of a fixed, random convolutional encoder.

Texture is well described by the correlations between feature maps of a
convolutional network (Gatys et al., "Image Style Transfer Using Convolutional
Neural Networks", CVPR 2016). No pretrained network is available offline, and a
random one suffices: Gram matrices of random conv features synthesise natural
textures (Ustyuzhaninov et al., "What does it take to generate natural
textures?", ICLR 2017). For each layer l with feature map F_l of shape (C, H*W):

    G_l = (F_l - mean) (F_l - mean)^T / (H*W)          (channel covariance, interior pixels)
    s   = ⊕_l ssqrt(triu(G_l)),  ssqrt(g) = g / sqrt(|g| + eps) ~ sign(g) sqrt(|g|)
    out = normalize(P s),  P ~ N(0, 1/len(s)) of shape (dim, len(s))

The conv weights and P are drawn from a torch.Generator seeded by `seed`, so they
are the same on every machine; they are buffers, never trained.

Args (StyleConfig):
    channels: output channels of the 3x3 conv layers, dilated 1, 2, 4, ... (default (16, 32, 32)).
    dim: size of the output vector (default 64).
    seed: seed of the random weights (default 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ssqrt's smoothing: its slope at 0 is 1/sqrt(eps) = 100 (finite), while the median
# |covariance| of each layer is 5e-3 to 4e-2 (stripes, dots, noise), where ssqrt ~ sign * sqrt.
_SSQRT_EPSILON = 1e-4
# Textured images' vectors have norm ~1 before normalising (stripes, dots, noise:
# 0.9-1.6); below 1e-2 (near-flat images, e.g. noise of std 1e-3) the output is
# shortened instead of blown up to a unit vector, which bounds the gradient.
_NORM_FLOOR = 1e-2


@dataclass(frozen=True)
class StyleConfig:
    # Three layers (receptive fields 3, 7, 15 px with dilations 1, 2, 4) span stroke
    # to motif scales of 64x64 images; widths stay small so the Grams stay cheap
    # (16*17/2 + 2 * 32*33/2 = 1192 statistics).
    channels: tuple[int, ...] = (16, 32, 32)
    # 64 numbers, Step 1's embedding width: a Gaussian random projection keeps the
    # distances between the 1192-long Gram vectors (Johnson-Lindenstrauss).
    dim: int = 64
    # Fixed so the feature is one function everywhere; another seed, another encoder.
    seed: int = 0


def ssqrt(values: Tensor) -> Tensor:
    """Smooth signed square root: compresses the Grams' wide range, with a finite gradient at 0."""
    return values / torch.sqrt(values.abs() + _SSQRT_EPSILON)


def channel_covariance(features: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C*(C+1)/2): the upper triangle (diagonal included) of F F^T / (H*W), F centred."""
    flat = features.flatten(2)
    flat = flat - flat.mean(dim=2, keepdim=True)
    gram = flat @ flat.transpose(1, 2) / flat.shape[2]
    rows, cols = torch.triu_indices(gram.shape[1], gram.shape[2], device=gram.device)
    return gram[:, rows, cols]


def interior(features: Tensor, margin: int) -> Tensor:
    """The map less `margin` pixels at each edge, where padding shaped it; never more than half the image."""
    height, width = features.shape[-2:]
    top, side = min(margin, height // 4), min(margin, width // 4)
    return features[..., top : height - top, side : width - side]


class GramStyle(nn.Module):
    """(B, 3, H, W) sRGB in [0, 1], H and W >= 8 -> (B, dim) float32 unit-norm style vector.

    The layers are 3x3 convolutions with dilations 1, 2, 4, ..., ReLU, no bias.
    A flat image (no texture) maps to the zero vector, whatever its colour.
    """

    def __init__(self, config: StyleConfig | None = None):
        super().__init__()
        self.config = config = config or StyleConfig()
        generator = torch.Generator().manual_seed(config.seed)
        in_channels = 3
        for index, out_channels in enumerate(config.channels):
            # He initialisation: keeps activations O(1) through the ReLUs. No bias: the
            # input is centred, so ReLU(W x) already splits each filter's response.
            fan_in = in_channels * 9
            weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) * (2.0 / fan_in) ** 0.5
            self.register_buffer(f"conv{index}", weight)
            in_channels = out_channels
        statistics = sum(c * (c + 1) // 2 for c in config.channels)
        projection = torch.randn(config.dim, statistics, generator=generator) / statistics**0.5
        self.register_buffer("projection", projection)
        self.dim = config.dim
        # Reflection padding needs a side longer than the last dilation, 2**(layers - 1).
        self.min_size = max(8, 2 ** (len(config.channels) - 1) + 1)

    def feature_maps(self, pixels: Tensor) -> list[Tensor]:
        """ReLU maps of each layer, all at full resolution; layer l is dilated by 2**l.

        Dilation instead of pooling or stride: downsampling aliases, so shifting a
        pattern by a pixel changed its Grams about as much as changing the pattern
        (stripes shifted vs stripes -> dots); dilated layers stay translation-
        equivariant while the receptive field still grows 3, 7, 15 px.
        """
        hidden = 2.0 * pixels.to(self.projection.dtype) - 1.0  # centred, so ReLU's threshold sits at mid-grey
        maps = []
        for index in range(len(self.config.channels)):
            dilation = 2**index
            # Reflection padding: zero padding would add a frame edge whose weight depends on image size.
            padded = F.pad(hidden, (dilation,) * 4, mode="reflect")
            hidden = F.relu(F.conv2d(padded, getattr(self, f"conv{index}"), dilation=dilation))
            maps.append(hidden)
        return maps

    def forward(self, pixels: Tensor) -> Tensor:
        if min(pixels.shape[-2:]) < self.min_size:
            raise ValueError(f"GramStyle needs H, W >= {self.min_size}, got {tuple(pixels.shape[-2:])}")
        # Centred Grams (covariances): uncentred Grams of ReLU maps are dominated by
        # mean x mean, i.e. by colour and brightness, which ColourHistogram already
        # measures (BENCHMARKS.md, "Figures behind code choices"). Only interior
        # pixels: the padding shapes the edges.
        grams, reach = [], 0
        for index, features in enumerate(self.feature_maps(pixels)):
            reach += 2**index  # how far padding reaches into this layer's map
            grams.append(ssqrt(channel_covariance(interior(features, reach))))
        statistics = torch.cat(grams, dim=1)
        # L2 normalisation, not standardisation: the vector stays a function of the
        # image alone (no dataset or batch statistics). The encoder is positively
        # homogeneous, so contrast k about mid-grey scales every Gram by k^2 and its
        # ssqrt by about k; normalising removes it and leaves the texture's pattern.
        return F.normalize(statistics @ self.projection.T, dim=1, eps=_NORM_FLOOR)
