"""Image sets from a bundle: deterministic PNGs named by their sha256, and one manifest row per image.

A row holds everything needed to make the image again: bundle version and digest, segment,
prompt, seed, the seeds of its whole batch (CPU kernels may round differently for another
batch size, so a regeneration reruns the batch), the sampler settings, and where it was made
(device class, dtype, torch version, machine). The same bytes are promised only where all of
those are the same (`Made.differences`); elsewhere the same seed still gives the same starting
noise (drawn on the CPU), and a regeneration is checked by its scores. Files are named by content
(`images/<sha256>.png`): no segment id or prompt ever becomes a path component, and a
file, once there, is the image its name says.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from PIL import Image, PngImagePlugin
from torch import Tensor

from prefgen.atomic import write_atomic
from prefgen.generation.config import GuidanceConfig

MANIFEST = "manifest.parquet"
MAX_PROMPT_CHARS = 300  # far above any prompt the text encoder reads (its context is 77 tokens)


class RequestError(ValueError):
    """A generation request cannot be honoured (empty or long prompt, no seeds); the message says which."""


def prompt_problem(prompt: str) -> str | None:
    """Why the sampler cannot take `prompt` (empty, too long), or None."""
    if not prompt.strip():
        return "the prompt is empty"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"the prompt is {len(prompt)} characters, at most {MAX_PROMPT_CHARS}"
    return None


@dataclass(frozen=True)
class BatchRequest:
    """One sampler call: `len(seeds)` images of `segment` for `prompt`, image k from its own seed."""

    segment: str
    prompt: str
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        problem = prompt_problem(self.prompt)
        if problem:
            raise RequestError(f"segment {self.segment!r}: {problem}")
        if not self.seeds:
            raise RequestError(f"segment {self.segment!r}, prompt {self.prompt!r}: no seeds")


@dataclass(frozen=True)
class BundleRef:
    """Which registered bundle made an image."""

    model: str
    version: str
    digest: str


# The x86 extensions oneDNN and ATen pick kernels by: convolutions round differently with and
# without them (AVX-512 against AVX2 kernels, same torch, other bits: BENCHMARKS.md, "Machines"), so two CPUs
# that differ here are not the same kind of machine for byte-exact regeneration.
KERNEL_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The kernel-relevant instruction-set extensions of this CPU, e.g. 'avx2+avx512f'; '' where unknown."""
    try:
        flags_line = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""
    flags = set(flags_line.partition(":")[2].split())
    return "+".join(flag for flag in KERNEL_ISA_FLAGS if flag in flags)


def machine(device: str | torch.device = "cpu") -> str:
    """The kind of machine images made on `device` come from (its GPU model, or the CPU's kernel extensions):
    byte-exact regeneration is promised only on the same kind."""
    device = torch.device(device)
    kind = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu {cpu_isa() or platform.processor()}"
    return f"{platform.system()}-{platform.machine()} torch {torch.__version__} {kind}".rstrip()


@dataclass(frozen=True)
class Made:
    """Where images were made: what decides whether the same request gives the same bytes."""

    device: str  # the device class: "cpu" or "cuda"
    dtype: str  # the models' dtype, e.g. "float32"
    torch_version: str
    machine: str
    threads: int | None = None  # torch's CPU threads: a kernel's rounding may depend on how it splits (None: not recorded)

    @classmethod
    def by(cls, pipe) -> Made:
        """Where `pipe` samples."""
        return cls(pipe.device.type, str(pipe.dtype).removeprefix("torch."), torch.__version__, machine(pipe.device),
                   torch.get_num_threads())

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Made:
        """Where a manifest row's image was made. Rows written before these columns existed were made on the CPU in
        float32 (nothing placed a model elsewhere then); their torch version is read from the machine string."""
        recorded = row.get("machine") or ""
        version = re.search(r"\btorch (\S+)", recorded)
        threads = row.get("threads")
        return cls(row.get("device") or "cpu", row.get("dtype") or "float32",
                   row.get("torch_version") or (version.group(1) if version else ""), recorded,
                   int(threads) if threads is not None else None)

    def differences(self, now: Made) -> list[str]:
        """What differs from `now`, e.g. ["device cpu -> cuda"]; none: the same bytes are promised."""
        return [f"{name} {a or '?'} -> {b or '?'}" for name, a, b in
                (("device", self.device, now.device), ("dtype", self.dtype, now.dtype),
                 ("torch", self.torch_version, now.torch_version), ("machine", self.machine, now.machine),
                 ("threads", self.threads, now.threads if self.threads is not None else None)) if a != b]


# Made elsewhere, rounding differs from the first step on and DDIM carries it along, so the bytes may change while
# what the image shows should not: its two scores are compared instead, each within a twentieth of a unit.
SCORE_TOLERANCE = 0.05
SCORES = ("preference_score", "text_score")


def regeneration_verdict(row: dict[str, Any], again: dict[str, Any], made: Made, now: Made,
                         tolerance: float = SCORE_TOLERANCE) -> dict[str, Any]:
    """What a regeneration (`again`, a row made `now`) can promise for the image of `row` (made `made`), and whether
    it kept it: the same bytes where device class, dtype, torch version and machine all agree; elsewhere scores
    within `tolerance` (whether the bytes matched is reported all the same)."""
    differs = made.differences(now)
    gaps = {key: abs(float(again[key]) - float(row[key])) for key in SCORES}
    bytes_match, scores_match = again["image_sha256"] == row["image_sha256"], max(gaps.values()) <= tolerance
    return {"promise": f"scores within {tolerance}" if differs else "byte-identical", "differs": differs,
            "match": bytes_match, "scores_match": scores_match, "score_gaps": gaps,
            "kept": scores_match if differs else bytes_match, "made_with": asdict(made), "now_with": asdict(now)}


def sampler_json(cfg: GuidanceConfig) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def png_bytes(pixels: Tensor, text: dict[str, str]) -> bytes:
    """(3, H, W) in [0, 1] -> PNG bytes with `text` as tEXt chunks; the same input gives the same bytes."""
    array = (pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    info = PngImagePlugin.PngInfo()
    for key, value in sorted(text.items()):
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), "RGB").save(buffer, format="PNG", pnginfo=info, optimize=False)
    return buffer.getvalue()


@torch.no_grad()
def _scores(pipe, pixels: Tensor, request: BatchRequest) -> tuple[list[float], list[float]]:
    n = len(pixels)
    return pipe.pref_score(pixels, [request.segment] * n).tolist(), pipe.text_score(pixels, [request.prompt] * n).tolist()


def generate_batch(pipe, request: BatchRequest, bundle: BundleRef) -> list[tuple[bytes, dict[str, Any]]]:
    """(PNG bytes, manifest row) for each image of one batch, made where `pipe`'s models are; each image's starting
    noise comes from a CPU generator seeded with its seed."""
    pixels = pipe(request.segment, request.prompt, n=len(request.seeds),
                  generator=[torch.Generator().manual_seed(s) for s in request.seeds])
    pref, text = _scores(pipe, pixels, request)
    sampler, made = sampler_json(pipe.guidance), asdict(Made.by(pipe))
    out = []
    for k, seed in enumerate(request.seeds):
        data = png_bytes(pixels[k], {"prefgen.bundle": f"{bundle.model}/{bundle.version}", "prefgen.segment": request.segment,
                                     "prefgen.prompt": request.prompt, "prefgen.seed": str(seed)})
        sha = hashlib.sha256(data).hexdigest()
        out.append((data, {"image_sha256": sha, "file": f"images/{sha}.png", "segment": request.segment,
                           "prompt": request.prompt, "seed": seed, "batch_seeds": list(request.seeds), "batch_index": k,
                           "sampler": sampler, "preference_score": pref[k], "text_score": text[k],
                           "bundle_model": bundle.model, "bundle_version": bundle.version, "bundle_digest": bundle.digest}
                    | made))
    return out


def read_manifest(out_dir: Path) -> pl.DataFrame | None:
    path = out_dir / MANIFEST
    return pl.read_parquet(path) if path.is_file() else None


def merge_manifest(out_dir: Path, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Add rows to OUT/manifest.parquet (a row per image sha; a newer row wins) and write it atomically."""
    new = pl.DataFrame(rows, infer_schema_length=None)
    old = read_manifest(out_dir)
    merged = pl.concat([old, new], how="diagonal_relaxed") if old is not None else new
    merged = merged.unique("image_sha256", keep="last", maintain_order=True)
    buffer = io.BytesIO()
    merged.write_parquet(buffer)
    write_atomic(out_dir / MANIFEST, buffer.getvalue())
    return merged


def generate(pipe, requests: Iterable[BatchRequest], bundle: BundleRef, out_dir: Path, run: dict[str, str],
             progress: Callable[[Iterable], Iterable] = lambda it: it) -> list[dict[str, Any]]:
    """Every request's images as OUT/images/<sha>.png; their rows (plus `run`'s ids) merged into OUT/manifest.parquet."""
    rows = []
    stamp = {"generation_run_id": run.get("run_id", ""),
             "created_at": datetime.now(UTC).isoformat(timespec="seconds")} | {k: v for k, v in run.items() if k != "run_id"}
    for request in progress(list(requests)):
        for data, row in generate_batch(pipe, request, bundle):
            write_atomic(out_dir / row["file"], data)
            rows.append(row | stamp)
    if rows:
        merge_manifest(out_dir, rows)
    return rows


def find_row(manifest: pl.DataFrame, sha: str) -> dict[str, Any] | None:
    """The manifest row of the image whose sha256 starts with `sha` (at least 8 hex digits); None if absent."""
    if len(sha) < 8:
        raise RequestError(f"give at least 8 hex digits of the image sha256, not {sha!r}")
    found = manifest.filter(pl.col("image_sha256").str.starts_with(sha.lower()))
    if found.height > 1 and found["image_sha256"].n_unique() > 1:
        raise RequestError(f"{sha!r} matches {found['image_sha256'].n_unique()} images; give more digits")
    return found.row(0, named=True) if found.height else None
