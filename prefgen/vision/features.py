"""Stage `visual_features`: v = s ⊕ t ⊕ c for every image, each part in its own Parquet keyed by image id.

    semantic.parquet   s: the CLIP image tower (stage `train_clip`, or a pretrained local checkpoint)
    style.parquet      t: Gram statistics of a fixed random conv encoder (vision/style.py)
    colour.parquet     c: soft Lab histogram (vision/colour.py)
    skipped.parquet    image_id, reason: images without a readable prepared file (the preparation's reason,
                       not_prepared, missing_file, undecodable_image, wrong_size)

Every image is read from the prepared folder (stage `prepare_images`), at the models' size. Columns:
image_id, prepared (the prepared file's name: the preparation's cache key of source content, size and version),
extractor (digest of what computed it), vector. Incremental: a row is kept while its prepared file and its extractor
are unchanged, with no file read or hashed, so a new batch of images costs only those
images; a retrained CLIP tower recomputes `semantic` only. Files are replaced atomically.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from prefgen.vision.config import VisualFeaturesConfig
from prefgen.vision.extractors import PARTS, extractors
from prefgen.vision.pixels import read_image, with_pixels


def _existing(path: Path) -> pl.DataFrame | None:
    """The part's table as last written, or None where there is none or it predates the `prepared` key."""
    table = pl.read_parquet(path) if path.is_file() else None
    return table if table is not None and "prepared" in table.columns else None


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


@torch.no_grad()
def _compute(todo: list[tuple[str, Path]], parts: dict, size: int, batch_size: int,
             device: str | torch.device = "cpu") -> tuple[dict[str, dict], Counter, list]:
    """Vectors per part for the todo images, in batches on `device` (where the extractors are) with a progress bar;
    reasons for the unreadable ones."""
    vectors: dict[str, dict[str, np.ndarray]] = {p: {} for p in parts}
    reasons: Counter = Counter()
    skipped = []
    for start in tqdm(range(0, len(todo), batch_size), desc="visual_features", unit="batch", disable=not todo):
        batch, ids = [], []
        for image_id, path in todo[start : start + batch_size]:
            pixels, reason = read_image(path, size)
            if pixels is None:
                reasons[reason] += 1
                skipped.append((image_id, reason))
            else:
                batch.append(pixels), ids.append(image_id)
        if not batch:
            continue
        stacked = torch.stack(batch).to(device)
        for part, (_, fn) in parts.items():
            out = fn(stacked).float().cpu().numpy()
            vectors[part].update(zip(ids, out))
    return vectors, reasons, skipped


def run(cfg: VisualFeaturesConfig, tables_dir: Path, prepared_dir: Path, clip_dir: Path, out: Path, log=print,
        device: str | torch.device = "cpu") -> dict:
    """Update the part tables in `out` for every image of the images table in `tables_dir` with a path, read from
    its prepared file in `prepared_dir`, the extractors running on `device`."""
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    images = with_pixels(tables_dir, prepared_dir)
    unprepared = images.filter(pl.col("reason") != "").select("image_id", "reason")
    paths = {i: Path(f) for i, f in images.filter(pl.col("reason") == "").select("image_id", "file").iter_rows()}
    keys = {i: p.name for i, p in paths.items()}
    parts = {part: (digest, module.to(device)) for part, (digest, module) in extractors(cfg, clip_dir).items()}
    kept: dict[str, pl.DataFrame] = {}
    todo_ids: set[str] = set()
    for part, (digest, _) in parts.items():
        old = _existing(out / f"{part}.parquet")
        current = pl.DataFrame({"image_id": list(keys), "prepared": list(keys.values())}).with_columns(extractor=pl.lit(digest))
        kept[part] = old.join(current, on=["image_id", "prepared", "extractor"], how="semi") if old is not None else None
        have = set(kept[part]["image_id"]) if kept[part] is not None else set()
        todo_ids |= set(keys) - have
    todo = sorted((i, paths[i]) for i in todo_ids)
    vectors, reasons, skipped = _compute(todo, {p: parts[p] for p in PARTS}, cfg.image_size, cfg.batch_size, device)
    skipped += list(unprepared.iter_rows())
    reasons.update(unprepared["reason"].to_list())
    sizes = {}
    for part, (digest, _) in parts.items():
        new = pl.DataFrame({"image_id": list(vectors[part]), "prepared": [keys[i] for i in vectors[part]],
                            "extractor": [digest] * len(vectors[part]), "vector": [v.tolist() for v in vectors[part].values()]},
                           schema={"image_id": pl.String, "prepared": pl.String, "extractor": pl.String, "vector": pl.List(pl.Float32)})
        table = pl.concat([kept[part], new]) if kept[part] is not None else new  # recomputed rows win below
        table = table.unique("image_id", keep="last").sort("image_id")
        _write_atomic(table, out / f"{part}.parquet")
        sizes[part] = {"rows": table.height, "dim": len(table["vector"][0]) if table.height else 0}
    _write_atomic(pl.DataFrame(skipped, schema={"image_id": pl.String, "reason": pl.String}, orient="row"), out / "skipped.parquet")
    computed = len(todo) - (len(skipped) - unprepared.height)
    log(f"visual_features: {computed} images computed, {len(keys) - len(todo)} kept, {len(skipped)} skipped")
    return {"images": images.height, "computed": computed, "kept": len(keys) - len(todo),
            "skipped": dict(reasons), "parts": sizes}
