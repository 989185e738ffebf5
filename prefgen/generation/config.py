"""Typed configs of Step 3's stages: `train_vq`, `train_w`, `train_diffusion`, and the guided sampler's
settings, `sampler` (params.yaml sections).

`train_vq` and `train_diffusion` have two profiles in params.yaml (`demo`: minutes on
2 cores; `quality`: within an hour); the top-level `profile` key picks one and
`prefgen.params.resolve_profile` merges it over the shared keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefgen.params import ConfigError, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, top_level


def _check_blocks(section: str, key: str, channels: list[int], groups: int) -> None:
    if not channels or any(c < 1 or c % groups for c in channels):
        raise ConfigError(f"params.{section}.{key} {channels}: each must be a positive multiple of norm_num_groups={groups}")


@dataclass(frozen=True)
class TrainVQConfig:
    """Stage `train_vq` (METHOD.md 3.1): a diffusers VQModel on the `train` images."""

    profile: str = "demo"  # set by params.yaml's top-level `profile`; recorded with every run
    image_size: PositiveInt = top_level(64)  # params.yaml's top-level image_size: the image store's size
    # One block per resolution; diffusers' encoder halves the size between blocks, so three
    # blocks take 64x64 pixels to a 16x16 latent grid (128x128 to 32x32), small enough for a CPU UNet.
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    layers_per_block: PositiveInt = 1
    norm_num_groups: PositiveInt = 8
    latent_channels: PositiveInt = 4  # n_z; also the UNet's input channels
    num_vq_embeddings: PositiveInt = 256  # K codebook entries (diffusers' commitment weight is its fixed 0.25)
    # Codes no batch picked during an epoch are moved onto random encoder outputs: without it
    # a small codebook collapses onto a few codes (the usage metric shows it).
    restart_dead_codes: bool = True
    epochs: PositiveInt = 8
    lr: PositiveFloat = 0.001
    # Cosine decay to lr/100: at a constant rate val PSNR swings from epoch to epoch, so where training
    # stopped decided quality (BENCHMARKS.md, "Step 3a", "The VQ's schedule").
    lr_schedule: str = "cosine"  # or "constant"
    # The epoch with the best val PSNR is the one saved, not the last (its weights ride in the checkpoint).
    keep_best: bool = True
    batch_size: PositiveInt = 32
    seed: int = 0
    threads: PositiveInt = 2  # conv nets gain from the second core (BENCHMARKS.md, "Figures behind code choices"); 1 for bit-for-bit repeats across machines
    pretrained: str = ""  # a local diffusers VQModel folder (config.json + safetensors): loaded, not trained

    def __post_init__(self) -> None:
        _check_blocks("train_vq", "block_out_channels", self.block_out_channels, self.norm_num_groups)
        if self.epochs < 1 or self.batch_size < 1 or self.num_vq_embeddings < 2:
            raise ConfigError("params.train_vq: epochs and batch_size must be >= 1, num_vq_embeddings >= 2")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"params.train_vq.lr_schedule is {self.lr_schedule!r}; use 'cosine' or 'constant'")


@dataclass(frozen=True)
class TrainWConfig:
    """Stage `train_w` (METHOD.md 3.2): W maps G(v_i) into the text space, by cosine to the image's semantic feature."""

    hidden: PositiveInt = 256
    lr: PositiveFloat = 0.001
    weight_decay: NonNegativeFloat = 0.0001
    max_epochs: PositiveInt = 1000  # full-batch epochs: the train split is ~1.4k rows, each epoch is milliseconds
    patience: PositiveInt = 30  # epochs without a better validation cosine before stopping
    seed: int = 0
    threads: PositiveInt = 1


@dataclass(frozen=True)
class TrainDiffusionConfig:
    """Stage `train_diffusion` (METHOD.md 3.3): eps-prediction UNet on VQ latents, conditioned on s and W(e)."""

    profile: str = "demo"
    # UNet2DConditionModel: one cross-attention down/up block per level, halving the latent side from level to level
    # until it is bottleneck_size, so the depth follows the image size (16x16 latents: 2 levels, 32x32: 3).
    base_channels: PositiveInt = 32  # the first level's width; each deeper level doubles it
    bottleneck_size: PositiveInt = 8  # the latent side at the deepest level: attention over 64 positions is cheap on a CPU
    # Levels with a larger latent side have no attention: self-attention costs side^4, which at 32x32 latents (128 px)
    # dominates a CPU epoch (BENCHMARKS.md, "Resolution"); SDXL drops attention at its highest resolution too.
    attention_max_size: PositiveInt = 16
    layers_per_block: PositiveInt = 1
    norm_num_groups: PositiveInt = 16
    attention_head_dim: PositiveInt = 8
    num_train_timesteps: PositiveInt = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # cosine: keeps signal in small latents longer than linear
    # Each condition is zeroed on its own with this probability, so classifier-free
    # guidance can act on the text, on the preference, or on both.
    text_dropout: Fraction = 0.1
    pref_dropout: Fraction = 0.1
    ema_decay: Fraction = 0.999  # the cap; diffusers' EMAModel ramps decay as (1+n)/(10+n), so short runs still average
    flip_augment: bool = True  # mirrored train images double the data; captions and tastes are mirror-invariant
    epochs: PositiveInt = 20
    lr: PositiveFloat = 0.0003
    batch_size: PositiveInt = 64  # the global batch: each of N processes takes batch_size / N, so N must divide it
    seed: int = 0
    threads: PositiveInt = 2

    def __post_init__(self) -> None:
        _check_blocks("train_diffusion", "base_channels", [self.base_channels], self.norm_num_groups)
        if not (0 <= self.text_dropout < 1 and 0 <= self.pref_dropout < 1):
            raise ConfigError("params.train_diffusion: text_dropout and pref_dropout must be in [0, 1)")
        if not 0 < self.ema_decay < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("params.train_diffusion: ema_decay in (0, 1), epochs and batch_size >= 1")


@dataclass(frozen=True)
class GuidanceConfig:
    """Params section `sampler`: how the guided sampler runs (METHOD.md 3.5); the evaluation's ablations switch parts off."""

    profile: str = "demo"  # set by params.yaml's top-level `profile` (the section has profiles); recorded with every run
    steps: PositiveInt = 20  # DDIM steps (eta = 0)
    # Classifier-free guidance: eps = (1 - w_s) eps(0,0) + (w_s - w_p) eps(s,0) + w_p eps(s,p~);
    # w_s = w_p = 1 is the plain conditional model (no CFG).
    text_scale: float = 3.0  # w_s
    pref_scale: float = 2.0  # w_p
    lambda_pref: NonNegativeFloat = 1.0  # lambda_p: weight of the preference-score gradient (0 = off)
    lambda_text: NonNegativeFloat = 1.0  # lambda_s: weight of the text-score gradient (0 = off)
    guide_from: Fraction = 0.2  # the gradient guidance acts on steps in [guide_from, guide_until) of the run:
    guide_until: Fraction = 0.8  # the earliest x0-predictions are too blurred to score, the last steps change little
    # The final decode snaps latents to the codebook, as in training; a small codebook can snap away
    # what guidance moved (measured with tiny models), so it can be switched off.
    quantize_output: bool = True
    prototype_tau: PositiveFloat = 0.1  # softmax temperature of the preference prototype (METHOD.md 3.4)
    # How much the prompt weighs in the prototype: its weights become softmax(D/tau + k * CLIP's logit of
    # <W(e^_i), s>), the segment's favourites among the images that show what the prompt says (0 = METHOD.md
    # 3.4's prototype over the whole catalogue, whose condition can contradict the prompt;
    # BENCHMARKS.md, "Step 3b", "How the sampler and its settings were chosen").
    prototype_prompt_weight: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0 <= self.guide_from <= self.guide_until <= 1 or self.prototype_tau <= 0 or self.prototype_prompt_weight < 0:
            raise ConfigError("params.sampler: steps >= 1, 0 <= guide_from <= guide_until <= 1, prototype_tau > 0, "
                              "prototype_prompt_weight >= 0")
