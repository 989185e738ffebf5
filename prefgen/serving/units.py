"""Running a night's units idempotently: images first, then the unit's manifest part, each written atomically.

    <night>/images/<sha256>.png      every image, named by content
    <night>/units/<key>.parquet      a unit's manifest rows: written last, so its presence means "done"
    <night>/manifest.parquet         every done unit's rows, in plan order (rewritten by `finalize`)

After a kill -9 a rerun skips every unit whose part exists and makes the others; a batch cut
off half-way is made again whole (its images come out bit-identical). The only debris a kill
can leave are hidden temporary files (`.name.<uuid>.tmp`), which `sweep_temporaries` removes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import torch

from prefgen.atomic import write_atomic
from prefgen.serving.image_sets import MANIFEST, BundleRef, generate_batch
from prefgen.serving.plan import Unit

UNITS = "units"


def part_path(night: Path, unit: Unit) -> Path:
    return night / UNITS / f"{unit.key}.parquet"


def is_done(night: Path, unit: Unit) -> bool:
    return part_path(night, unit).is_file()


def sweep_temporaries(night: Path) -> int:
    """Remove the hidden temporary files a killed run left; returns how many."""
    stale = [p for p in night.rglob(".*.tmp") if p.is_file()] if night.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(buffer)
    return buffer.getvalue()


def run_unit(pipe, unit: Unit, bundle: BundleRef, night: Path, stamp: dict[str, str]) -> int:
    """Make one unit's images and then its manifest part; returns the number of images written."""
    rows = []
    made_at = {"created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    for data, row in generate_batch(pipe, unit.request, bundle):
        write_atomic(night / row["file"], data)
        rows.append(row | {"unit": unit.key} | stamp | made_at)
    write_atomic(part_path(night, unit), _parquet_bytes(rows))
    return len(rows)


@dataclass(frozen=True)
class SegmentResult:
    segment: str
    made_units: int
    skipped_units: int
    images: int


def run_segment(pipe, units: list[Unit], bundle: BundleRef, night: Path, stamp: dict[str, str], threads: int,
                log: Callable[[str], None] = print) -> SegmentResult:
    """Every unit of one segment that is not done yet; `threads` torch threads (same on every path: same bytes)."""
    torch.set_num_threads(threads)
    todo = [u for u in units if not is_done(night, u)]
    images = 0
    for i, unit in enumerate(todo, 1):
        images += run_unit(pipe, unit, bundle, night, stamp)
        log(f"segment {unit.segment!r}: unit {i}/{len(todo)} done ({unit.prompt!r}, {len(unit.seeds)} images)")
    segment = units[0].segment if units else ""
    return SegmentResult(segment, len(todo), len(units) - len(todo), images)


def finalize(night: Path, units: list[Unit]) -> tuple[Path, list[Unit]]:
    """Write <night>/manifest.parquet from the parts of the done units, in plan order; returns it and the units not done."""
    done = [u for u in units if is_done(night, u)]
    missing = [u for u in units if not is_done(night, u)]
    if done:
        frame = pl.concat([pl.read_parquet(part_path(night, u)) for u in done], how="diagonal_relaxed")
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        write_atomic(night / MANIFEST, buffer.getvalue())
    return night / MANIFEST, missing


_PIPELINES: dict[tuple[str, str, str, str], Any] = {}


def cached_pipeline(bundle_folder: str, digest: str, sampler_json: str, device: str = "cpu"):
    """The bundle's sampler on `device` (a torch device name, e.g. "cuda:1"), built once per process (a Dask worker
    serves many segments with one load)."""
    import json

    from prefgen.generation.config import GuidanceConfig
    from prefgen.registry.bundle import Bundle, BundleError

    key = (bundle_folder, digest, sampler_json, device)
    if key not in _PIPELINES:
        bundle = Bundle.load(Path(bundle_folder))
        if bundle.digest != digest:
            raise BundleError(f"{bundle_folder}: digest {bundle.digest[:12]}, the night resolved {digest[:12]}")
        _PIPELINES.clear()  # one bundle at a time: a model set is hundreds of MB
        _PIPELINES[key] = bundle.pipeline(GuidanceConfig(**json.loads(sampler_json)), device=device)
    return _PIPELINES[key]
