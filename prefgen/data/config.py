"""Typed configs of the data stages: `synth`, `ingest`, `split` and `prefgen forget` (params.yaml sections)."""

from __future__ import annotations

from dataclasses import dataclass

from prefgen.params import ConfigError, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt


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
    days: PositiveInt = 90  # events spread over this many days before the world's fixed end date (synth.py)
    chunk_individuals: PositiveInt = 50_000  # clicks are drawn and written this many individuals at a time


@dataclass(frozen=True)
class IngestConfig:
    """Stage `ingest`: raw social logs -> Parquet tables (see docs/DATA.md)."""

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
    # How long an ingest waits for another one writing to the same tables folder before failing.
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
class SplitConfig:
    """Stage `split`: every image id -> train | val | cold."""

    val_fraction: Fraction = 0.1  # for early stopping
    # Cold images never appear in an interaction a training stage reads: they stand
    # in for new (generated) images when evaluating cold-start scores.
    cold_fraction: Fraction = 0.2
    seed: int = 7
    # The last holdout_days of interactions are held out for evaluation without ground truth (stage eval_holdout):
    # no training stage reads an event in that window, and an image first seen in it is cold. 0: no window.
    holdout_days: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.cold_fraction < 1 and self.val_fraction + self.cold_fraction < 1):
            raise ConfigError("params.split: val_fraction and cold_fraction must be >= 0 and sum to < 1")
