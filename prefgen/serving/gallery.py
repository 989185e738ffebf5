"""A static HTML contact sheet for one image-generation run: an index and, per segment, a page and a PNG grid.

The nightly flow makes many small images per segment; a person checks them by eye, so
this writes `index.html` (one link per segment with its image count and mean scores),
`segments/<key>.html` (each prompt's images by seed, with their scores) and
`segments/<key>.png` (the same images tiled, for a glance or an attachment).

Segment ids and prompts come from users: they are HTML-escaped everywhere and never
become path components (a segment's files are named by `segment_key`). Pages hold no
JavaScript and no external URL, and refer to images by relative paths, so the run
folder can be moved or served as a whole. The same manifest and images give the same
bytes, so reruns do not churn artefact hashes.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl
from PIL import Image

from prefgen.atomic import write_atomic

REQUIRED = (
    "segment", "prompt", "seed", "image_sha256", "file",
    "preference_score", "text_score", "bundle_model", "bundle_version",
)
GAP = 2  # pixels between grid tiles
BACKGROUND = (255, 255, 255)

# Scripts are forbidden outright, so a prompt that slipped past escaping still could not run.
CSP = "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'"
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h2 { font-size: 1em; margin: 1.5em 0 .5em; white-space: pre-wrap; overflow-wrap: anywhere; }
.row { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; font-size: 12px; font-variant-numeric: tabular-nums; }
img { width: 128px; height: auto; image-rendering: pixelated; display: block; background: #eee; }
table { border-collapse: collapse; }
td, th { padding: .25em .75em; text-align: left; border-bottom: 1px solid #ddd; }
code { overflow-wrap: anywhere; }
"""

Segments = dict[str, dict[str, list[dict[str, Any]]]]  # segment -> prompt -> rows, in display order


@dataclass(frozen=True)
class Gallery:
    """Where write_gallery put things; `pages` and `grids` are keyed by segment id."""

    index: Path
    pages: dict[str, Path]
    grids: dict[str, Path]


def segment_key(segment: str) -> str:
    """A segment's file stem: a hash, so no id (`../x`, `a/b`, `CON`) can pick where a file goes."""
    return hashlib.sha256(segment.encode()).hexdigest()[:16]


def write_gallery(manifest: pl.DataFrame, images_root: Path, out_dir: Path, title: str, columns: int = 8) -> Gallery:
    """Write OUT/index.html and, per segment, OUT/segments/<key>.html and .png; every file atomically."""
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    _check(manifest, images_root)
    segments = _group(manifest)
    keys = {segment: segment_key(segment) for segment in segments}
    if len(set(keys.values())) != len(keys):
        raise ValueError("two segment ids share a segment_key; the gallery would overwrite one with the other")
    pages, grids = {}, {}
    for segment, prompts in segments.items():
        pages[segment] = out_dir / "segments" / f"{keys[segment]}.html"
        grids[segment] = pages[segment].with_suffix(".png")
        rows = [row for group in prompts.values() for row in group]
        write_atomic(grids[segment], _grid_png([images_root / row["file"] for row in rows], columns))
        write_atomic(pages[segment], _segment_page(segment, prompts, pages[segment], grids[segment], images_root, title))
    index = out_dir / "index.html"
    write_atomic(index, _index_page(segments, pages, index, title))
    return Gallery(index=index, pages=pages, grids=grids)


def _check(manifest: pl.DataFrame, images_root: Path) -> None:
    missing = [name for name in REQUIRED if name not in manifest.columns]
    if missing:
        raise ValueError(f"the manifest lacks the columns {missing}")
    nulls = {name: n for name, n in manifest.select(REQUIRED).null_count().row(0, named=True).items() if n}
    if nulls:
        raise ValueError(f"the manifest has nulls in {nulls}")
    absent = [name for name in manifest["file"].to_list() if not (images_root / name).is_file()]
    if absent:
        shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        raise ValueError(f"{len(absent)} image files are missing under {images_root}: {shown}")


def _group(manifest: pl.DataFrame) -> Segments:
    """Segments and prompts in manifest order (dicts keep insertion order), images by seed."""
    segments: Segments = {}
    for row in manifest.select(REQUIRED).iter_rows(named=True):
        segments.setdefault(row["segment"], {}).setdefault(row["prompt"], []).append(row)
    for prompts in segments.values():
        for rows in prompts.values():
            rows.sort(key=lambda row: row["seed"])  # stable: equal seeds keep manifest order
    return segments


def _grid_png(files: list[Path], columns: int) -> bytes:
    """The images tiled `columns` a row, each in a cell as large as the largest image."""
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    cell_w, cell_h = max(i.width for i in images), max(i.height for i in images)
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * cell_w + (cols - 1) * GAP, rows * cell_h + (rows - 1) * GAP), BACKGROUND)
    for k, image in enumerate(images):
        row, col = divmod(k, cols)
        grid.paste(image, (col * (cell_w + GAP), row * (cell_h + GAP)))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG", optimize=False)  # no pnginfo: nothing time- or host-dependent in the bytes
    return buffer.getvalue()


def _href(target: Path, page: Path) -> str:
    """A URL from `page` to `target`, relative so the folder can move, percent-encoded then attribute-escaped."""
    relative = Path(os.path.relpath(target, page.parent)).as_posix()
    return escape(quote(relative, safe="/"), quote=True)


def _document(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        f"<title>{escape(title, quote=True)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    ).encode()


def _figure(row: dict[str, Any], page: Path, images_root: Path) -> str:
    seed = int(row["seed"])
    return (
        f"<figure><img src=\"{_href(images_root / row['file'], page)}\" alt=\"seed {seed}\" "
        f"title=\"{escape(str(row['image_sha256']), quote=True)}\">"
        f"<figcaption>seed {seed}<br>pref {row['preference_score']:.3f}<br>"
        f"text {row['text_score']:.3f}</figcaption></figure>"
    )


def _segment_page(
    segment: str, prompts: dict[str, list[dict[str, Any]]], page: Path, grid: Path, images_root: Path, title: str
) -> bytes:
    rows = [row for group in prompts.values() for row in group]
    bundles = sorted({(str(r["bundle_model"]), str(r["bundle_version"])) for r in rows})
    bundle_text = ", ".join(f"{escape(m, quote=True)} v{escape(v, quote=True)}" for m, v in bundles)
    parts = [
        f"<p><a href=\"{_href(page.parent.parent / 'index.html', page)}\">&larr; all segments</a></p>",
        f"<h1>Segment <code>{escape(segment, quote=True)}</code></h1>",
        (
            f"<p>Bundle: {bundle_text} &middot; {len(rows)} images &middot; "
            f"<a href=\"{_href(grid, page)}\">contact grid (PNG)</a></p>"
        ),
    ]
    for prompt, group in prompts.items():
        figures = "\n".join(_figure(row, page, images_root) for row in group)
        parts.append(f"<section>\n<h2>{escape(prompt, quote=True)}</h2>\n<div class=\"row\">\n{figures}\n</div>\n</section>")
    return _document(f"{title} — {segment}", "\n".join(parts) + "\n")


def _index_page(segments: Segments, pages: dict[str, Path], index: Path, title: str) -> bytes:
    lines = []
    for segment, prompts in segments.items():
        rows = [row for group in prompts.values() for row in group]
        pref = sum(r["preference_score"] for r in rows) / len(rows)
        text = sum(r["text_score"] for r in rows) / len(rows)
        lines.append(
            f"<tr><td><a href=\"{_href(pages[segment], index)}\">{escape(segment, quote=True)}</a></td>"
            f"<td>{len(rows)}</td><td>{pref:.3f}</td><td>{text:.3f}</td></tr>"
        )
    body = (
        f"<h1>{escape(title, quote=True)}</h1>\n<table>\n"
        "<tr><th>segment</th><th>images</th><th>mean preference</th><th>mean text score</th></tr>\n"
        + "\n".join(lines) + "\n</table>\n"
    )
    return _document(title, body)
