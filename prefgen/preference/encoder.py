"""Step 1: the social preference encoder (METHOD.md, Step 1).

Two LightGCN propagations and an influence attention:

    He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation", SIGIR 2020:  e^(k+1)_u = sum_{i in N(u)} e^(k)_i / sqrt(|N(u)||N(i)|),
    e = sum_k a_k e^(k) with a_k = 1/(K+1)   (torch_geometric.nn.models.LightGCN)

1. individual-image click graph  -> e_u (individual taste), e_i (image)
2. group-member graph             -> e_g (group), e'_u (individual's membership side)
3. influence  w_g = sum_{u in g} softmax_u( MLP(c_u^g ⊕ e_u) + b_u ) e_u
   c_u^g are the member's centrality and activity features (log-scaled,
   standardised). [choice, beyond METHOD.md's MLP(c_u^g)] e_u and a learned
   per-individual bias b_u (zero at start) let the attention learn who
   persuades beyond what centrality shows, from the groups' own clicks.
   [choice] Which columns of c_u^g the attention reads is chosen before the
   exported model is trained, by cross-validated group clicks (influence.py).
4. p_g = e_g ⊕ w_g;  an individual is a group of one: p_u = e'_u ⊕ e_u
5. score(g, i) = <P p_g, e_i>, P a learned (d x 2d) projection
6. [choice] social smoothing of individuals, fixed after training (train.py
   picks β on validation): p_u <- (1 - β) p_u + β mean_{v ~ u} p_v over u's
   follow neighbours; β = 0 (the default buffer) is the model of 1-5.

Args:
    n_users, n_items, n_groups: node counts of each kind (dense integer ids).
    n_features: width of c_u^g (0 disables the centrality input).
    dim: embedding size d (default 64).
    layers: LightGCN layers K of both graphs (default 2).
    use_influence: attention over members (False: w_g = mean of member e_u).
    use_group_graph: the group-member propagation (False: e_g is a free embedding).
    n_item_features: width of the images' semantic embedding (0: learned ids only).
        With features, an image's initial embedding is W s_i + δ_i (METHOD.md 1.1):
        images that look alike start alike, so an image with few clicks borrows
        from its look-alikes; δ_i (zero at start) learns what the look misses.
    image_offsets: learn δ_i for images that have features (default False: such an
        image is its look W s_i only, and tastes are learned over looks, which is
        what carries over to unseen images; an all-zero feature row, an image
        without a vector, keeps its learned id δ_i either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn.models import LightGCN
from torch_geometric.utils import scatter, softmax


@dataclass
class Graphs:
    """Edge indexes (both directions) over node spaces [users | items] and [groups | users]."""

    click: Tensor  # (2, E) in the user+item node space
    member: Tensor  # (2, E) in the group+user node space
    member_group: Tensor  # (M,) group index of each (group, member) row
    member_user: Tensor  # (M,) user index of each row
    member_features: Tensor  # (M, F) c_u^g per row
    item_features: Tensor | None = None  # (I, Ds) Step 2's semantic embedding per image, where it exists
    social: Tensor | None = None  # (2, E) follow edges between individuals, both directions


class SocialPreferenceEncoder(nn.Module):
    def __init__(self, n_users: int, n_items: int, n_groups: int, n_features: int, dim: int = 64, layers: int = 2,
                 use_influence: bool = True, use_group_graph: bool = True, n_item_features: int = 0,
                 image_offsets: bool = False):
        super().__init__()
        self.n_users, self.n_items, self.n_groups = n_users, n_items, n_groups
        self.use_influence, self.use_group_graph, self.image_offsets = use_influence, use_group_graph, image_offsets
        self.register_buffer("smoothing", torch.zeros(()))  # β of step 6, saved with the weights
        self.click_gcn = LightGCN(n_users + n_items, dim, layers)
        self.member_gcn = LightGCN(n_groups + n_users, dim, layers)
        self.attention = nn.Sequential(nn.Linear(n_features + dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.persuasion = nn.Embedding(n_users, 1)
        nn.init.zeros_(self.persuasion.weight)
        self.project = nn.Linear(2 * dim, dim, bias=False)
        self.item_proj = nn.Linear(n_item_features, dim, bias=False) if n_item_features else None
        if n_item_features:
            with torch.no_grad():
                self.click_gcn.embedding.weight[n_users:].zero_()  # δ_i starts at zero: the look decides first

    def embeddings(self, graphs: Graphs) -> dict[str, Tensor]:
        """Propagated embeddings of every node kind."""
        if self.item_proj is None:
            ui = self.click_gcn.get_embedding(graphs.click)
        else:
            table = self.click_gcn.embedding.weight
            offsets = table[self.n_users :]
            if not self.image_offsets:  # only images without a vector (an all-zero row) keep their id
                offsets = offsets * (graphs.item_features == 0).all(dim=1, keepdim=True)
            x0 = torch.cat([table[: self.n_users], offsets + self.item_proj(graphs.item_features)])
            ui = _propagate(self.click_gcn, x0, graphs.click)
        gm = self.member_gcn.get_embedding(graphs.member) if self.use_group_graph else self.member_gcn.embedding.weight
        return {"user": ui[: self.n_users], "item": ui[self.n_users :], "group": gm[: self.n_groups],
                "user_member_side": gm[self.n_groups :]}

    def forward(self, graphs: Graphs) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """(propagated embeddings, p for groups, p for individuals): the full-graph pass a training batch needs,
        as one call, which is what data parallelism and mixed precision wrap."""
        emb = self.embeddings(graphs)
        groups, individuals, _ = self.segment_vectors(graphs, emb)
        return emb, groups, individuals

    def member_attention(self, graphs: Graphs, user: Tensor) -> Tensor:
        """Softmax weight of each (group, member) row within its group."""
        if not self.use_influence:
            ones = torch.ones(len(graphs.member_group), device=user.device)
            return ones / scatter(ones, graphs.member_group, dim_size=self.n_groups, reduce="sum")[graphs.member_group]
        logits = self.attention(torch.cat([graphs.member_features, user[graphs.member_user]], dim=1)).squeeze(1)
        logits = logits + self.persuasion.weight[graphs.member_user, 0]
        return softmax(logits, graphs.member_group, num_nodes=self.n_groups)

    def segment_vectors(self, graphs: Graphs, emb: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(p for groups [G, 2d], p for individuals [U, 2d], attention per member row [M])."""
        emb = emb or self.embeddings(graphs)
        weight = self.member_attention(graphs, emb["user"])
        influence = scatter(weight[:, None] * emb["user"][graphs.member_user], graphs.member_group,
                            dim=0, dim_size=self.n_groups, reduce="sum")
        groups = torch.cat([emb["group"], influence], dim=1)
        individuals = torch.cat([emb["user_member_side"], emb["user"]], dim=1)
        if graphs.social is not None and self.smoothing > 0:
            individuals = social_smoothing(individuals, graphs.social, self.smoothing)
        return groups, individuals, weight

    def score(self, p: Tensor, items: Tensor) -> Tensor:
        """<P p, e_i> for matching rows of p [B, 2d] and items [B, d], or all pairs if items is [I, d] and B != I."""
        return (self.project(p) * items).sum(-1)


def social_smoothing(p: Tensor, social: Tensor, beta: Tensor | float) -> Tensor:
    """(1 - β) p_u + β mean of p over u's neighbours in `social` (2, E); rows without neighbours unchanged."""
    src, dst = social
    degree = scatter(torch.ones_like(src, dtype=p.dtype), src, dim_size=len(p), reduce="sum")
    neighbours = scatter(p[dst], src, dim=0, dim_size=len(p), reduce="sum") / degree.clamp_min(1)[:, None]
    beta = beta * (degree > 0).to(p.dtype)[:, None]
    return (1 - beta) * p + beta * neighbours


def _propagate(gcn: LightGCN, x: Tensor, edge_index: Tensor) -> Tensor:
    """LightGCN's layer combination from given initial embeddings (PyG's get_embedding uses its own table)."""
    out = x * gcn.alpha[0]
    for conv, alpha in zip(gcn.convs, gcn.alpha[1:]):
        x = conv(x, edge_index)
        out = out + x * alpha
    return out
