"""Typed configs of the generation evaluation's stages: `train_oracle` and `eval_generation` (params.yaml sections)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefgen.params import ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, top_level


@dataclass(frozen=True)
class TrainOracleConfig:
    """Stage `train_oracle`: the shape and pattern classifier of the evaluation oracle (prefgen/eval/oracle.py)."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    n_train: PositiveInt = 6000  # renders drawn with `seed`; the world's own images are never used
    n_test: PositiveInt = 2000  # a second, disjoint seed: the accuracy the metrics report
    image_size: PositiveInt = top_level(64)  # params.yaml's top-level image_size: it judges images at the models' size
    width: PositiveInt = 16  # channels of the first conv block (doubling twice)
    feature_dim: PositiveInt = 64  # the penultimate layer: the Fréchet distance's feature space
    epochs: PositiveInt = 8
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.002
    blur_max: NonNegativeFloat = 1.5  # sigma of a random Gaussian blur per batch: generated images are softer than renders
    noise_max: NonNegativeFloat = 0.05  # std of additive pixel noise per image
    seed: int = 424242  # not the world's seed: a separately drawn set of renders
    threads: PositiveInt = 2  # these convs run much faster on two threads than one (BENCHMARKS.md, "Figures behind code choices")

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_test, self.epochs, self.batch_size, self.width, self.feature_dim) < 1:
            raise ConfigError("params.train_oracle: sizes, epochs and batch_size must be >= 1")


@dataclass(frozen=True)
class EvalGenerationConfig:
    """Stage `eval_generation`: personalisation, text consistency, quality and the guidance ablations (eval/generation.py)."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    # Each prompt names one attribute (a hue, a shape or a pattern) and leaves the others to the segment's taste.
    prompts: list[str] = field(default_factory=lambda: ["a star", "a circle", "a square", "a triangle"])
    pairs_per_prompt: PositiveInt = 25  # disjoint segment pairs per prompt: every image set is judged in exactly one pair
    images_per_segment: PositiveInt = 2  # per side of a pair
    # Pairs are drawn only between segments whose true tastes differ: 1 - Pearson correlation of
    # their utilities over the 128 attribute classes, at least this (1.0 = not positively correlated).
    min_taste_distance: NonNegativeFloat = 1.0
    segment_kinds: list[str] = field(default_factory=lambda: ["grp", "ind"])  # namespaces segments are drawn from
    arms: list[str] = field(default_factory=lambda: ["none", "cfg", "text_grad", "pref_grad", "fused"])
    bootstrap: PositiveInt = 2000  # resamples of pairs for the 95% intervals
    reference_images: PositiveInt = 400  # cold images for PSNR and as the Fréchet distance's reference set
    seed: int = 0
    threads: PositiveInt = 2  # in all: the workers share them
    # Processes that sample (threads // workers torch threads each). On 2 cores two one-thread workers sample
    # more images per second than one process with two threads: these small models' ops split badly
    # (BENCHMARKS.md, "Step 3b", "How the sampler and its settings were chosen").
    workers: PositiveInt = 2
    # Image sets sampled together in one batch (at least one set per call): larger batches sample faster per image
    # (BENCHMARKS.md, "Step 3b", "How the sampler and its settings were chosen").
    # Each set keeps its own starting noise, so the batch size changes the images only in rounding.
    images_per_batch: PositiveInt = 8

    def __post_init__(self) -> None:
        if not self.prompts or min(self.pairs_per_prompt, self.images_per_segment, self.images_per_batch, self.workers) < 1:
            raise ConfigError("params.eval_generation: prompts must not be empty; pairs_per_prompt, images_per_segment, "
                              "images_per_batch, workers >= 1")
        unknown = sorted(set(self.arms) - {"none", "cfg", "text_grad", "pref_grad", "fused"})
        if unknown or "fused" not in self.arms:
            raise ConfigError(f"params.eval_generation.arms: unknown {unknown}; must include 'fused' (the headline)")


@dataclass(frozen=True)
class ReferenceConfig:
    """Stage `reference`: scores of simple baselines on the synthetic world that learned models must beat."""

    k: PositiveInt = 10  # cut-off of the popularity Recall@k / NDCG@k
    min_group_size: PositiveInt = 3  # influence Spearman is averaged over groups at least this large


@dataclass(frozen=True)
class EvalGraphConfig:
    """Stage `eval_graph`: the learned member attention against the world's true influence (eval/graph.py)."""

    min_group_size: PositiveInt = 3  # influence Spearman is averaged over groups at least this large


@dataclass(frozen=True)
class EvalHoldoutConfig:
    """Stage `eval_holdout`: Step 1 on the held-out window's clicks against popularity (eval/holdout.py)."""

    negatives: PositiveInt = 100  # sampled negatives per held-out positive: the group-recommendation protocol's 1 + 100
    k: PositiveInt = 10  # the cut-off of HR@k and NDCG@k
    seed: int = 0  # draws the negatives and the bootstrap
    bootstrap: PositiveInt = 2000  # resamples of segments for the interval of the difference to popularity


@dataclass(frozen=True)
class TrainJudgesConfig:
    """Stage `train_judges`: Step 3's judges that never guide (eval/judges.py); the CLIP tower's other settings are
    train_clip's."""

    clip_seed: int = 1  # not train_clip's: a tower trained apart from the one that guides
    scorer_dim: PositiveInt = 32  # θ_s and E v size of the judge scorer (VBPR)
    scorer_lr: PositiveFloat = 0.005
    scorer_reg: NonNegativeFloat = 1e-4  # L2 on the batch's θ_s
    scorer_max_epochs: PositiveInt = 60
    scorer_patience: PositiveInt = 8  # epochs without a better val AUC before stopping
    seed: int = 1  # the scorer's: not train_mapper's
    threads: PositiveInt = 2


@dataclass(frozen=True)
class EvalGuidanceConfig:
    """Stage `eval_guidance`: fused guidance against unguided and CFG-only images, judged by eval/judges.py's models."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    prompts: list[str] = field(default_factory=list)  # empty: the train catalogue's `n_prompts` most frequent captions
    n_prompts: PositiveInt = 4
    segments_per_half: PositiveInt = 16  # segments in dev and in test; every one gets an image per prompt and arm
    bootstrap: PositiveInt = 2000  # resamples of segments for the 95% intervals
    seed: int = 0  # picks the segments and the starting noise
    threads: PositiveInt = 2  # in all: the workers share them
    workers: PositiveInt = 2  # sampling processes (eval_generation's reason)
    images_per_batch: PositiveInt = 8
