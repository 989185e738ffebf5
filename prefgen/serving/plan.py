"""A campaign's plan: the work units of one night, and what was refused, with reasons.

A unit is one sampler batch: (segment, prompt, seeds). Its key is the sha256 of everything that
decides its images (bundle digest, segment, prompt, seeds, sampler settings), so a unit done
once is never redone, and a change of any of these makes a new unit. Nothing a user wrote
(segment id, prompt) ever becomes part of a path: files are named by keys and image hashes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from prefgen.data.forget import subject_hash
from prefgen.serving.config import Campaign
from prefgen.serving.image_sets import BatchRequest, prompt_problem


@dataclass(frozen=True)
class Unit:
    """One batch of a night: `len(seeds)` images of `segment` for `prompt`."""

    segment: str
    prompt: str
    seeds: tuple[int, ...]
    key: str

    @property
    def request(self) -> BatchRequest:
        return BatchRequest(self.segment, self.prompt, self.seeds)


@dataclass(frozen=True)
class Rejected:
    """Part of a campaign that cannot be honoured: `what` is 'segment' or 'prompt'."""

    what: str
    value: str
    reason: str


@dataclass(frozen=True)
class Plan:
    units: list[Unit]
    rejected: list[Rejected]

    @property
    def segments(self) -> list[str]:
        """The segments with work, in plan order (each is one task of the fan-out)."""
        return list(dict.fromkeys(u.segment for u in self.units))


def unit_key(bundle_digest: str, segment: str, prompt: str, seeds: tuple[int, ...], sampler: str) -> str:
    payload = json.dumps([bundle_digest, segment, prompt, list(seeds), sampler], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _forgotten(segment: str, forgotten: frozenset[str]) -> str | None:
    """sha256 of the individual behind an `ind:` segment when they asked to be forgotten."""
    digest = subject_hash(segment[len("ind:"):]) if segment.startswith("ind:") else ""
    return digest if digest in forgotten else None


def select_segments(campaign: Campaign, known: pl.DataFrame, root: Path,
                    forgotten: frozenset[str] = frozenset()) -> tuple[list[str], list[Rejected]]:
    """The campaign's segments that the bundle knows, in id order, and the others as rejections: unknown
    ones, and those of forgotten individuals (named by the id's sha256, since the bundle predates the request)."""
    chosen = campaign.segments
    wanted = list(chosen.ids)
    wanted += known.filter(pl.col("kind").is_in(chosen.kinds))["segment_id"].to_list() if chosen.kinds else []
    if chosen.table:
        wanted += _table_ids(root / chosen.table)
    known_ids = set(known["segment_id"].to_list())
    unique = sorted(set(wanted))
    gone = {s: digest for s in unique if (digest := _forgotten(s, forgotten))}
    rejected = [Rejected("segment", f"ind:sha256:{digest}", "forgotten") for digest in sorted(set(gone.values()))]
    rejected += [Rejected("segment", s, "unknown segment: not in the bundle's segments table") for s in unique
                 if s not in known_ids and s not in gone]
    found = [s for s in unique if s in known_ids and s not in gone]
    return (found[: chosen.limit] if chosen.limit else found), rejected


def _table_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"campaign segments.table: no such file {path}")
    table = pl.read_parquet(path)
    if "segment_id" not in table.columns:
        raise ValueError(f"campaign segments.table {path}: no `segment_id` column (has {table.columns})")
    return table["segment_id"].drop_nulls().cast(pl.Utf8).to_list()


def valid_prompts(campaign: Campaign) -> tuple[list[str], list[Rejected]]:
    """Prompts the sampler accepts (deduplicated, in campaign order), and the others with the reason."""
    good, rejected = [], []
    for prompt in dict.fromkeys(campaign.prompts):
        problem = prompt_problem(prompt)
        if problem:
            rejected.append(Rejected("prompt", prompt, problem))
        else:
            good.append(prompt)
    return good, rejected


def plan(campaign: Campaign, known: pl.DataFrame, root: Path, bundle_digest: str, sampler: str,
         forgotten: frozenset[str] = frozenset()) -> Plan:
    """Every (segment, prompt) unit of the campaign, segments in id order and prompts in campaign order;
    `forgotten`: sha256 of the individuals whose segments are refused (prefgen/data/forget.py)."""
    segments, bad_segments = select_segments(campaign, known, root, forgotten)
    prompts, bad_prompts = valid_prompts(campaign)
    seeds = tuple(range(campaign.seed, campaign.seed + campaign.images_per_prompt))
    units = [Unit(s, p, seeds, unit_key(bundle_digest, s, p, seeds, sampler)) for s in segments for p in prompts]
    return Plan(units, bad_segments + bad_prompts)
