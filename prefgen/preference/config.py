"""Typed config of Step 1's training (stage `train_graph`; params.yaml section)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefgen.params import ConfigError, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt


@dataclass(frozen=True)
class TrainGraphConfig:
    """Step 1 training (stage `train_graph`, `prefgen bench grouprec`, which always uses the quality profile)."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    dim: PositiveInt = 64  # embedding size d; p_g has 2d
    layers: NonNegativeInt = 2  # LightGCN layers of both graphs (LightGCN's paper finds 2-3 best)
    lr: PositiveFloat = 0.005
    reg: NonNegativeFloat = 1e-3  # L2 on the batch's initial embeddings (LightGCN's lambda); 1e-4 overfits the softmax loss
    # "softmax": cross-entropy of each interaction against every catalogue image at once; "bpr": against one
    # sampled negative (LightGCN's loss). Softmax measured better on world-v1's cold start and on Mafengwo
    # (BENCHMARKS.md, "Step 1 on public group-recommendation data").
    loss: str = "softmax"
    # With loss "softmax": weight of BPR's pairwise term on the uniform negatives each epoch draws anyway, added to
    # the cross-entropy. It pushes the positive above one typical image, the 1 + 100 protocol's question (0 = off;
    # tried without gain: BENCHMARKS.md, "Step 1 on public group-recommendation data").
    pairwise_weight: NonNegativeFloat = 0.0
    # With loss "softmax": a catalogue of up to softmax_full_max_items images scores every batch row against all of
    # them, a (batch x catalogue) matrix; a larger one against its positive and softmax_negatives images drawn
    # uniformly once per batch (a sampled softmax, batch x (k + 1)), whose memory does not grow with the catalogue.
    # k 0: the full softmax at any size (params.yaml sets the k chosen on validation).
    softmax_negatives: NonNegativeInt = 0
    # At batch 2048, 50k images make the logits, their softmax and its gradient about 1.2 GB; 0: sampled at any size.
    softmax_full_max_items: NonNegativeInt = 50_000
    batch_size: PositiveInt = 2048
    max_epochs: PositiveInt = 120
    patience: PositiveInt = 15  # epochs without a better validation HR@10 before stopping (demo profile: 8, for time)
    eval_negatives: PositiveInt = 100  # sampled negatives per validation row, as in the test protocol
    group_weight: NonNegativeFloat = 1.0  # weight of the group-image BPR term against the individual one
    seed: int = 0
    threads: PositiveInt = 1  # torch threads: on the shared 2-core box one is often faster (measured)
    use_influence: bool = True
    use_group_graph: bool = True
    use_centrality: bool = True
    # Step 2's semantic image embedding (the visual features' semantic.parquet) as the images' initial embedding
    # (METHOD.md 1.1); False = learned ids only.
    item_features: bool = True
    # A learned offset δ_i on top of an image's look (W s_i + δ_i). False: an image with a semantic vector is its
    # look only, so a taste learned from clicks carries over to images nobody clicked (Step 2's cold start);
    # images without a vector always keep a learned id.
    image_offsets: bool = False
    # Candidate β of the social smoothing p_u <- (1 - β) p_u + β mean(p_v over u's follow neighbours), applied
    # after training and chosen on validation (0 = none): with ~20 clicks each, individuals borrow from those they
    # follow (homophily). Inert without a follow graph.
    social_smoothing: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8])
    # Once validation has chosen the epoch count and β, train a fresh model on every line, the held-out ones
    # included, for that many epochs and export it (train.refit): the held-out lines are evidence the model
    # otherwise never sees. The price is a second, shorter training and a model nothing is left to validate.
    refit: bool = False
    # K of the cross-validation that picks the member features the influence attention reads, before the model
    # is trained for export (preference/influence.py; 0 = it reads every feature): over every feature the attention
    # recovers influence worse (BENCHMARKS.md, "Step 1 on world-v1: member influence").
    influence_folds: NonNegativeInt = 10
    persuasion_precision: PositiveFloat = 10.0  # prior precision of each member's persuasiveness b_u in that choice

    def __post_init__(self) -> None:
        if self.loss not in ("softmax", "bpr"):
            raise ConfigError(f"params.train_graph.loss: {self.loss!r}; use softmax or bpr")
        if self.pairwise_weight < 0 or (self.pairwise_weight and self.loss != "softmax"):
            raise ConfigError(f"params.train_graph.pairwise_weight: {self.pairwise_weight}; a weight >= 0, with loss softmax only")
        if self.softmax_negatives and self.loss != "softmax":
            raise ConfigError(f"params.train_graph.softmax_negatives: {self.softmax_negatives}; with loss softmax only (0: off)")
        if not self.social_smoothing or any(not 0 <= b < 1 for b in self.social_smoothing):
            raise ConfigError(f"params.train_graph.social_smoothing: {self.social_smoothing}; give candidates in [0, 1)")
