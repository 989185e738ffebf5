"""A small platform made from real photos that PyPI packages ship, and a social log whose clicks follow the photos.

scikit-image's data folder (29 photos of mixed sizes, modes and formats) and scikit-learn's two JPEGs, augmented
(crops, flips, colour shifts, re-encodes in six formats and several modes) into a few hundred images with captions,
some empty. Each individual's taste weighs two plain pixel statistics (brightness and colourfulness), never the
model's own features; their clicks, and their groups' clicks, are drawn from that taste.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import skimage
import sklearn
from PIL import Image, ImageEnhance, ImageOps

SOURCES = sorted((Path(skimage.__file__).parent / "data").glob("*.[pjtg][npif][gf]*")) + sorted(
    (Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
# (format, suffix, mode): every format and mode the preparation must read
ENCODINGS = [("JPEG", "jpg", "RGB"), ("PNG", "png", "RGBA"), ("WEBP", "webp", "RGB"), ("PNG", "png", "P"),
             ("BMP", "bmp", "RGB"), ("TIFF", "tif", "CMYK"), ("GIF", "gif", "P"), ("JPEG", "jpg", "L")]


START, DAYS, FIRST_DAYS = datetime(2026, 1, 1, tzinfo=UTC), 60, 45  # the log's days; the first FIRST_DAYS come first


@dataclass(frozen=True)
class PlatformSize:
    images: int = 240
    individuals: int = 100
    groups: int = 8
    clicks_per_individual: int = 24
    clicks_per_group: int = 10
    taste_scale: float = 3.0  # how sharply a taste picks images: popularity alone must not explain the clicks
    seed: int = 0


def augmented(source: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop (half the sides or more), maybe mirrored, with its colour and brightness shifted."""
    width, height = source.size
    crop_w, crop_h = (int(side * rng.uniform(0.5, 1.0)) for side in (width, height))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    image = source.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.3, 1.7))
    return ImageEnhance.Brightness(image).enhance(rng.uniform(0.6, 1.4))


def pixel_statistics(image: Image.Image) -> np.ndarray:
    """(brightness, colourfulness) of an RGB image: mean luma, and Hasler and Suesstrunk's colourfulness."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return np.array([rgb.mean(), colourfulness])


def caption(source: Path, index: int) -> str:
    """The source's name in words, empty for every seventh image (captions are optional in the contract)."""
    return "" if index % 7 == 3 else "a photo of " + source.stem.replace("_", " ").split(" ")[0]


def write_images(photos: Path, size: PlatformSize, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    """The augmented photos under photos/, their catalogue rows (the unreadable sources' first) and their pixel
    statistics (standardised; row k of the statistics is image img<k>)."""
    sources, rows, stats = [], [], []
    for path in SOURCES:
        try:
            sources.append((path, Image.open(path).convert("RGB")))  # a GIF's or TIFF's first frame
        except OSError:  # a file Pillow cannot read goes in as it is: the preparation must reject it, not stop
            (photos / "unreadable").mkdir(parents=True, exist_ok=True)
            (photos / "unreadable" / path.name).write_bytes(path.read_bytes())
            rows.append({"image_id": f"raw-{path.stem}", "path": f"unreadable/{path.name}", "caption": ""})
    for index in range(size.images):
        source, image = sources[index % len(sources)]
        image = augmented(image, rng)
        fmt, suffix, mode = ENCODINGS[index % len(ENCODINGS)]
        name = f"{source.stem}/{index:04d}.{suffix}"
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        image.convert(mode).save(photos / name, fmt)
        rows.append({"image_id": f"img{index}", "path": name, "caption": caption(source, index),
                     "owner_id": f"u{int(rng.integers(size.individuals))}"})
        stats.append(pixel_statistics(image))
    stats = np.array(stats)
    return rows, (stats - stats.mean(0)) / stats.std(0)


def drawn(taste: np.ndarray, features: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct images drawn with probability softmax(features . taste)."""
    logits = features @ taste
    weights = np.exp(logits - logits.max())
    return rng.choice(len(features), size=count, replace=False, p=weights / weights.sum())


def social_events(size: PlatformSize, features: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """Follows, group joins, individuals' clicks and groups' clicks, each click drawn from a taste over the statistics."""
    events: list[dict] = []

    def add(actor: str, kind: str, target: str) -> None:
        when = START + timedelta(minutes=int(rng.integers(0, DAYS * 24 * 60)))
        events.append({"event_id": f"e{len(events)}", "ts": when.isoformat().replace("+00:00", "Z"), "actor_id": actor,
                       "type": kind, "target_id": target})

    angles = rng.uniform(0, 2 * np.pi, size.individuals)  # each individual likes one direction in the statistics' plane
    tastes = size.taste_scale * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    for user in range(size.individuals):
        alike = np.abs(np.angle(np.exp(1j * (angles - angles[user]))))  # people follow those of similar taste
        for other in rng.choice(size.individuals, size=4, replace=False, p=np.exp(-2 * alike) / np.exp(-2 * alike).sum()):
            if other != user:
                add(f"u{user}", "follow", f"u{other}")
        for image in drawn(tastes[user], features, size.clicks_per_individual, rng):
            add(f"u{user}", str(rng.choice(["click", "click", "favorite", "repost"])), f"img{image}")
    for group in range(size.groups):
        members = rng.choice(size.individuals, size=int(rng.integers(4, 12)), replace=False)
        for member in members:
            add(f"u{member}", "join", f"g{group}")
        for image in drawn(tastes[members].mean(0), features, size.clicks_per_group, rng):
            add(f"g{group}", "group_click", f"img{image}")
    return events


def write_photo_platform(root: Path, size: PlatformSize = PlatformSize()) -> dict[str, Path]:
    """logs/ (events.jsonl, images.jsonl) and photos/ under `root`, as `prefgen new` takes them. The logs hold the
    first FIRST_DAYS days of events; later/events-later.jsonl holds the rest, for a user to add to the logs later."""
    rng = np.random.default_rng(size.seed)
    logs, photos, later = root / "logs", root / "photos", root / "later"
    logs.mkdir(parents=True)
    later.mkdir()
    rows, features = write_images(photos, size, rng)
    catalog = logs / "images.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows))
    events = social_events(size, features, rng)
    cut = (START + timedelta(days=FIRST_DAYS)).isoformat().replace("+00:00", "Z")
    (logs / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events if e["ts"] < cut))
    (later / "events-later.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events if e["ts"] >= cut))
    return {"logs": logs, "images": photos, "catalog": catalog, "later": later / "events-later.jsonl"}
