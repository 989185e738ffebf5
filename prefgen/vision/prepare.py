"""Image preparation: photos of any format, mode and size turned into square RGB images of one size, with reasons for the rest.

`prepare_bytes` turns one file's bytes into uint8 pixels (3, size, size):

1. the header is read and its width x height checked against `max_pixels` before any pixel is decoded;
2. a JPEG is decoded at the smallest DCT scale that still covers `size` (Pillow's `draft`);
3. the EXIF orientation is applied;
4. the shorter side is scaled to `size` (small images are scaled up) and the centre square kept, in one resize;
   palette, CMYK and binary images are made RGB before it, a 16-bit image is brought to 8 bits after it
   (`_sixteen_bit_to_rgb` says how);
5. transparency (RGBA, LA, a palette entry or a PNG colour key) is composited on white, and grey made RGB.

`prepare_images` does that for every row of an image catalogue (the raw manifest format of docs/DATA.md:
`images*.jsonl`, optionally gzipped, or ingest's `images.parquet`) and writes into its output folder

    images/<ab>/<sha256>-<size>px-v<PREPARATION_VERSION>.png    one per distinct cache key
    manifest.parquet                                           image_id, path, sha256, prepared, reason

The cache key is the file's content sha256, the size and `PREPARATION_VERSION`: a rerun decodes only files
whose key has no prepared image yet, so changing a file, the size or the method redoes what it must. Every
file is written under a temporary name and renamed, and prepared images the manifest no longer names are
removed, so the folder holds exactly what its manifest lists.

Reasons a catalogue row has no prepared image (the manifest's `reason`; "" when prepared):

    bad_row            the catalogue line is not a JSON object with a string or integer `image_id`
    duplicate_id       an earlier row has the same `image_id` (the first row wins, as at ingest)
    no_path            the row's `path` is empty or absent (an image without pixels)
    bad_path           the path is absolute or leaves the images folder (`..`, a link out); never opened
    missing_file       the images folder has no file at that path
    unreadable_file    the path is not a regular file, or reading it failed (permissions, I/O)
    empty_file         the file has no bytes
    not_an_image       no Pillow format recognises the file
    too_many_pixels    the header's width x height exceeds `max_pixels` (or Pillow's own bomb limit)
    truncated_image    the pixel data ends early
    undecodable_image  the format is recognised but its data cannot be decoded (corrupt, unsupported)
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import os
import re
import stat
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps, UnidentifiedImageError

from prefgen.atomic import atomic_path
from prefgen.data.config import IngestConfig
from prefgen.data.readers import iter_jsonl

PREPARATION_VERSION = 1  # part of every cache key: bump it whenever a change here changes the pixels produced
DEFAULT_MAX_PIXELS = 64_000_000  # a 64-megapixel photo decodes to 192 MiB of RGB, the most one image may hold
RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0  # big reductions first average whole pixel blocks, then LANCZOS the last factor of three
IMAGES, MANIFEST, LOCK = "images", "manifest.parquet", ".prepare.lock"
PROGRESS_S = 10.0
MANIFEST_SCHEMA = pa.schema([pa.field(name, pa.string(), nullable=False)
                             for name in ("image_id", "path", "sha256", "prepared", "reason")])
REASONS = ("bad_row", "duplicate_id", "no_path", "bad_path", "missing_file", "unreadable_file", "empty_file",
           "not_an_image", "too_many_pixels", "truncated_image", "undecodable_image")
UNSAFE_FORMATS = ("EPS",)  # Pillow hands EPS to Ghostscript, an interpreter that must never run an uploaded file
CATALOG_FIELDS = ("image_id", "path")
_PREPARED_NAME = re.compile(r"[0-9a-f]{64}-\d+px-v\d+\.png")


def prepare_bytes(data: bytes, size: int, max_pixels: int) -> tuple[np.ndarray | None, str]:
    """(uint8 pixels (3, size, size), "") of one image file's bytes, or (None, reason); never raises on bad bytes."""
    image, reason = prepare_image(data, size, max_pixels)
    if image is None:
        return None, reason
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)), ""


def prepare_image(data: bytes, size: int, max_pixels: int) -> tuple[Image.Image | None, str]:
    """`prepare_bytes` as a size x size RGB Pillow image, the form `prepare_images` saves."""
    if not data:
        return None, "empty_file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF or oversized headers; the reason says enough
            with Image.open(io.BytesIO(data), formats=_formats()) as image:
                width, height = image.size
                if width * height > max_pixels:
                    return None, "too_many_pixels"
                if width < 1 or height < 1:
                    return None, "undecodable_image"
                return _fit(image, size), ""
    except Image.DecompressionBombError:
        return None, "too_many_pixels"
    except UnidentifiedImageError:
        return None, "not_an_image"
    except OSError as err:
        return None, "truncated_image" if "truncated" in str(err).lower() else "undecodable_image"
    except Exception:  # noqa: BLE001 - Pillow's decoders raise many types (struct.error, IndexError, ...) on hostile bytes
        return None, "undecodable_image"


@functools.cache
def _formats() -> tuple[str, ...]:
    """Every format Pillow can open here but the unsafe ones."""
    Image.init()
    return tuple(name for name in Image.OPEN if name not in UNSAFE_FORMATS)


def _fit(image: Image.Image, size: int) -> Image.Image:
    """Steps 2-5 of the module docstring on an opened image."""
    if image.format in ("JPEG", "MPO"):
        image.draft(image.mode, (size, size))  # every side stays >= size, so the crop below loses no detail
    image.load()
    image = ImageOps.exif_transpose(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    if image.mode.startswith("I") or image.mode == "F":
        return _sixteen_bit_to_rgb(image, size, box)
    small = _resizable(image).resize((size, size), RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    if small.mode in ("RGBA", "LA"):
        white = Image.new("RGBA", small.size, (255, 255, 255, 255))
        white.alpha_composite(small.convert("RGBA"))
        small = white
    return small.convert("RGB")


def _resizable(image: Image.Image) -> Image.Image:
    """The image in a mode whose resize averages what it shows: RGB or grey, with alpha where it has transparency.

    Grey stays grey and alpha is composited after the resize, on size x size pixels rather than the photo's;
    Pillow resizes RGBA and LA premultiplied, so compositing after matches compositing before up to rounding."""
    if image.has_transparency_data:  # an alpha band, a transparent palette entry or a PNG colour key
        return image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image, size: int, box: tuple[float, ...]) -> Image.Image:
    """A 16-bit or 32-bit grey image as 8-bit RGB, resized in floating point first.

    16-bit images (I;16*) are scaled by the fixed 65535 white of their format, so a dark scan stays dark as any
    viewer shows it; 32-bit integer and float images have no such white, and are stretched from their least
    to their greatest value."""
    sixteen = image.mode.startswith("I;16")
    grey = image.convert("I").convert("F") if image.mode != "F" else image
    small = np.asarray(grey.resize((size, size), RESAMPLE, box=box, reducing_gap=REDUCING_GAP), dtype=np.float64)
    small = np.nan_to_num(small, nan=0.0, posinf=0.0, neginf=0.0)
    if sixteen:
        low, high = 0.0, 65535.0
    else:
        low, high = float(small.min()), float(small.max())
    scaled = (small - low) * (255.0 / (high - low)) if high > low else np.zeros_like(small)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")


def prepared_name(sha256: str, size: int) -> str:
    """The prepared image's path inside the output folder: its cache key, fanned out over 256 subfolders."""
    return f"{IMAGES}/{sha256[:2]}/{sha256}-{size}px-v{PREPARATION_VERSION}.png"


def safe_path(images_dir: Path, path: str) -> Path | None:
    """The file a catalogue path names inside images_dir (resolved, links followed), or None where it would leave it."""
    parts = PurePosixPath(path)
    if parts.is_absolute() or ".." in parts.parts or "\x00" in path:
        return None
    root = images_dir.resolve()
    target = (root / parts).resolve()
    return target if target.is_relative_to(root) and target != root else None


def read_catalog(catalog: Path) -> Iterator[tuple[Any, Any]]:
    """(image_id, path) of every catalogue row in file order. A JSONL catalogue goes through ingest's reader, so a
    line that is not a JSON object, holds a field of the wrong JSON type or is longer than ingest's limit gives
    (None, None) and a long line is never held whole."""
    if catalog.suffix == ".parquet":
        table = pq.read_table(catalog, columns=["image_id", "path"])
        yield from zip(table.column("image_id").to_pylist(), table.column("path").to_pylist())
        return
    limits = IngestConfig()
    for chunk in iter_jsonl(catalog, CATALOG_FIELDS, ("image_id",), limits.chunk_bytes, limits.max_line_bytes):
        rows = [(line, (image_id, path) if wrong is None else (None, None))
                for image_id, path, line, wrong in chunk.frame.select(*CATALOG_FIELDS, "_line", "_wrong_type").iter_rows()]
        rows += [(line, (None, None)) for line, *_ in chunk.rejected]
        yield from (entry for _, entry in sorted(rows, key=lambda row: row[0]))


def _row_problem(image_id: Any, path: Any, seen: set[str]) -> str:
    """The reason a catalogue row cannot name an image, or ""."""
    if isinstance(image_id, bool) or not isinstance(image_id, (str, int)) or str(image_id) == "":
        return "bad_row"
    if str(image_id) in seen:
        return "duplicate_id"
    if path is None or path == "":
        return "no_path"
    return "" if isinstance(path, str) else "bad_row"


def _read_file(images_dir: Path, path: str) -> tuple[bytes | None, str]:
    """(the file's bytes, "") or (None, reason); only a regular file inside images_dir is opened."""
    try:
        target = safe_path(images_dir, path)
        if target is None:
            return None, "bad_path"
        if not stat.S_ISREG(os.stat(target).st_mode):
            return None, "unreadable_file"  # a FIFO or a device would block or never end
        return target.read_bytes(), ""
    except FileNotFoundError:
        return None, "missing_file"
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop, as Path.resolve reports it
        return None, "unreadable_file"


def _save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)  # tiny images: a stronger level saves bytes, not time


class _Progress:
    """A log line every PROGRESS_S seconds of a run, and one at its end."""

    def __init__(self, total: int, log: Callable[[str], None], every_s: float):
        self.total, self.log, self.every_s = total, log, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, counts: Counter, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= self.every_s:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            self.log(f"prepare_images: {done}/{self.total} rows, {counts['prepared']} prepared, "
                     f"{counts['unchanged']} unchanged, {counts['rejected']} rejected, {rate:.0f} rows/s")


def prepare_images(images_dir: Path, catalog: Path, out_dir: Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                   log: Callable[[str], None] = print, progress_s: float = PROGRESS_S) -> dict[str, Any]:
    """Prepare every image the catalogue names (module docstring); returns JSON-able counts:
    {"read", "prepared", "unchanged", "rejected", "reasons": {reason: n}, "removed"}."""
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    if not catalog.is_file():
        raise FileNotFoundError(f"catalogue not found: {catalog}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run on the folder waits: its cleanup would remove our images
        columns, counts = _prepare_rows(images_dir, catalog, out_dir, size, max_pixels, log, progress_s)
        with atomic_path(out_dir / MANIFEST) as tmp:
            pq.write_table(pa.table(columns, schema=MANIFEST_SCHEMA), tmp)
        removed = _remove_unlisted(out_dir, set(columns["prepared"]) - {""})
    reasons = {reason: counts[reason] for reason in REASONS if counts[reason]}
    return {"read": len(columns["image_id"]), "prepared": counts["prepared"], "unchanged": counts["unchanged"],
            "rejected": counts["rejected"], "reasons": reasons, "removed": removed}


def _prepare_rows(images_dir: Path, catalog: Path, out_dir: Path, size: int, max_pixels: int,
                  log: Callable[[str], None], progress_s: float) -> tuple[dict[str, list[str]], Counter]:
    """The manifest's columns and the counts, preparing each image whose cache key has no prepared file."""
    try:
        entries = list(read_catalog(catalog))
    except (OSError, EOFError, ValueError, KeyError) as err:  # a corrupt or cut gzip or Parquet file, a table without the columns
        raise ValueError(f"catalogue {catalog} could not be read ({type(err).__name__}: {err})") from err
    progress, counts, seen = _Progress(len(entries), log, progress_s), Counter(), set()
    columns: dict[str, list[str]] = {name: [] for name in MANIFEST_SCHEMA.names}
    for done, (image_id, path) in enumerate(entries, start=1):
        sha256, prepared, reason = "", "", _row_problem(image_id, path, seen)
        if not reason:
            seen.add(str(image_id))
            data, reason = _read_file(images_dir, path)
        if not reason:
            sha256 = hashlib.sha256(data).hexdigest()
            prepared = prepared_name(sha256, size)
            if (out_dir / prepared).is_file():
                counts["unchanged"] += 1
            else:
                image, reason = prepare_image(data, size, max_pixels)
                if image is not None:
                    _save_png(image, out_dir / prepared)
                    counts["prepared"] += 1
        if reason:
            prepared = ""
            counts["rejected"] += 1
            counts[reason] += 1
        row = ("" if image_id is None else str(image_id), path if isinstance(path, str) else "", sha256, prepared, reason)
        for name, value in zip(MANIFEST_SCHEMA.names, row):
            columns[name].append(value)
        progress(done, counts)
    progress(len(entries), counts, final=True)
    return columns, counts


def _remove_unlisted(out_dir: Path, listed: set[str]) -> int:
    """Remove prepared images the manifest does not name, and temporaries a killed run left; returns how many."""
    removed = 0
    for folder in (out_dir / IMAGES).glob("*"):
        if not folder.is_dir():
            continue
        for file in folder.iterdir():
            stale = _PREPARED_NAME.fullmatch(file.name) and f"{IMAGES}/{folder.name}/{file.name}" not in listed
            if stale or (file.name.startswith(".") and file.name.endswith(".tmp")):
                file.unlink(missing_ok=True)
                removed += 1
    return removed
