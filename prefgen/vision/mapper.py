"""Step 2: the GAN preference mapper (METHOD.md, Step 2).

A generator G maps an image's visual features v = s ⊕ t ⊕ c into Step 1's image
space; a discriminator D(p_g, e) says how much segment g (given by its Step 1
preference vector p_g, never by an id) prefers an image with embedding e:

    L_BPR = -Σ log σ( D(p_g, e_i) - D(p_g, e_j) )            i interacted with by g, j not
    L_D   = -E[log D(p_g, e_i)] - E[log(1 - D(p_g, G(v_i)))] + β L_BPR
    L_G   = -E[log D(p_g, G(v_i))] + α ‖G(v_i) - e_i‖²

trained alternately. The cold-start preference of any image x is
pref(g, x) = D(p_g, G(v(x))) — the product's metric and Step 3's guide.

[choice] D's logit is a bilinear term ⟨A p_g, e⟩ plus an MLP of (p_g, e): the
bilinear part is Step 1's own scoring form (A starts from Step 1's P), so D
starts as a preference model rather than from noise; the MLP learns the rest.
The features are standardised with the train images' mean and std (kept in
the model), and e is Step 1's embedding divided by its train RMS so that α
means the same at any embedding scale.

Args (MapperConfig): hidden width, α (`l2_weight`), β (`bpr_weight`),
`adversarial` (False: G with L2 only and D with BPR only, the ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Generator(nn.Module):
    """G: standardised visual features -> Step 1 image space."""

    def __init__(self, feature_mean: Tensor, feature_std: Tensor, dim: int, hidden: int = 256):
        super().__init__()
        self.register_buffer("feature_mean", feature_mean.float())
        self.register_buffer("feature_std", feature_std.float().clamp_min(1e-6))
        self.net = nn.Sequential(nn.Linear(len(feature_mean), hidden), nn.LayerNorm(hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, features: Tensor) -> Tensor:
        return self.net((features - self.feature_mean) / self.feature_std)


class Discriminator(nn.Module):
    """D(p_g, e) as a logit: ⟨A p_g, e⟩ + MLP(p_g ⊕ e)."""

    def __init__(self, project: Tensor, hidden: int = 256):
        super().__init__()
        dim, pref_dim = project.shape
        self.bilinear = nn.Linear(pref_dim, dim, bias=False)
        with torch.no_grad():
            self.bilinear.weight.copy_(project)
        self.mlp = nn.Sequential(nn.Linear(pref_dim + dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, p: Tensor, e: Tensor) -> Tensor:
        return (self.bilinear(p) * e).sum(-1) + self.mlp(torch.cat([p, e], dim=-1)).squeeze(-1)


def bpr_loss(d: Discriminator, p: Tensor, e_pos: Tensor, e_neg: Tensor) -> Tensor:
    return -F.logsigmoid(d(p, e_pos) - d(p, e_neg)).mean()


def discriminator_loss(d: Discriminator, p: Tensor, e_pos: Tensor, e_neg: Tensor, fake: Tensor,
                       bpr_weight: float, adversarial: bool) -> Tensor:
    loss = bpr_weight * bpr_loss(d, p, e_pos, e_neg)
    if adversarial:
        real, generated = d(p, e_pos), d(p, fake.detach())
        loss = loss + F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) \
            + F.binary_cross_entropy_with_logits(generated, torch.zeros_like(generated))
    return loss


def generator_loss(d: Discriminator, p: Tensor, fake: Tensor, target: Tensor, l2_weight: float, adversarial: bool) -> Tensor:
    loss = l2_weight * (fake - target).pow(2).sum(-1).mean()
    if adversarial:
        judged = d(p, fake)
        loss = loss + F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
    return loss


def preference(g: Generator, d: Discriminator, p: Tensor, features: Tensor) -> Tensor:
    """pref(g, x) in (0, 1) for every pair: p (S, 2d), features (B, Dv) -> (S, B)."""
    e = g(features)
    return torch.sigmoid(d(p[:, None, :].expand(-1, len(e), -1), e[None, :, :].expand(len(p), -1, -1)))
