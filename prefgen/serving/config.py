"""Typed configs of the nightly generation: params.yaml's `nightly` section and a campaign spec file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from prefgen.params import ConfigError, PositiveInt, from_section, read_yaml

SEGMENT_KINDS = ("group", "individual")  # the `kind` column of the graph stage's segments table
CAMPAIGN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # it names a folder, so it is a slug, never free text
NIGHT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # a night's folder: a date (YYYY-MM-DD) or a slug
DATE_SHAPED = re.compile(r"\d{4}-\d{2}-\d{2}")


def check_night(night: str) -> str:
    """`night` as the name of its folder inside the campaign's: a date (YYYY-MM-DD) or a slug, never a path."""
    if not NIGHT_NAME.fullmatch(night):
        raise ConfigError(f"night {night!r}: give a date (YYYY-MM-DD) or a slug of lowercase letters, digits and '-' "
                          "(it names a folder)")
    if DATE_SHAPED.fullmatch(night):
        try:
            date.fromisoformat(night)
        except ValueError:
            raise ConfigError(f"night {night!r} is shaped like a date but is no calendar day") from None
    return night


@dataclass(frozen=True)
class DaskConfig:
    """Where the fan-out over segments runs."""

    address: str = ""  # a running Dask scheduler (tcp://host:8786); "" starts a LocalCluster on this machine
    # LocalCluster worker processes, one thread each (torch in threads of one process would share a core);
    # 0 runs the segments one after another in the flow's own process, without Dask.
    n_workers: int = 2

    def __post_init__(self) -> None:
        if self.n_workers < 0:
            raise ConfigError("params.nightly.dask.n_workers must be >= 0")


@dataclass(frozen=True)
class NightlyConfig:
    """Section `nightly`: which campaign and which bundle (the image sets go to paths.nightly/<campaign>/<night>/)."""

    campaign: str = "campaigns/default.yaml"  # the campaign spec (relative to the project root)
    bundle: str = "champion"  # alias or version of the registry's bundle, resolved once per night
    # torch threads per segment task, the same on every path: a kernel's rounding may depend on its
    # thread count, and the Dask run must give the very bytes of the single-process run.
    threads: PositiveInt = 1
    # Where each worker's models run: auto deals the GPUs torch sees to the workers, one each where there are as
    # many (round robin where fewer), and takes the CPU where there is none; cuda with no GPU is an error. A running
    # scheduler's workers (dask.address) resolve it on their own machines.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dask: DaskConfig = field(default_factory=DaskConfig)


@dataclass(frozen=True)
class SegmentSelection:
    """Which segments a campaign covers: the union of explicit ids, whole kinds and a table's ids."""

    ids: list[str] = field(default_factory=list)  # namespaced ids as in the graph's segments table: grp:g7, ind:u12
    kinds: list[str] = field(default_factory=list)  # every segment of these kinds: group, individual
    table: str = ""  # a Parquet file (relative to the project root) with a `segment_id` column
    limit: int = 0  # at most this many, the first by id; 0 = no limit

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(SEGMENT_KINDS))
        if unknown:
            raise ConfigError(f"campaign segments.kinds: {unknown} are not kinds; known: {list(SEGMENT_KINDS)}")
        if not (self.ids or self.kinds or self.table):
            raise ConfigError("campaign segments: give ids, kinds or a table")
        if self.limit < 0:
            raise ConfigError("campaign segments.limit must be >= 0")


@dataclass(frozen=True)
class Campaign:
    """A campaign spec: every selected segment gets `images_per_prompt` images for each prompt.

    Image k of a (segment, prompt) uses seed `seed + k`, the same for every segment, so two
    segments' image sets differ by their preference only.
    """

    name: str
    segments: SegmentSelection
    prompts: list[str]
    images_per_prompt: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not CAMPAIGN_NAME.fullmatch(self.name):
            raise ConfigError(f"campaign name {self.name!r}: lowercase letters, digits, '-' and '_' only (it names a folder)")
        if self.images_per_prompt < 1:
            raise ConfigError("campaign images_per_prompt must be >= 1")
        if not self.prompts:
            raise ConfigError("campaign prompts: give at least one")


def load_campaign(path: Path) -> Campaign:
    """Read and type-check a campaign YAML file."""
    if not path.is_file():
        raise ConfigError(f"campaign spec not found: {path}")
    return from_section(Campaign, read_yaml(path), f"campaign[{path}]")
