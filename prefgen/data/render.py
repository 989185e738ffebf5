"""Procedural images for the synthetic world: a coloured shape on a patterned background.

Each image has three discrete visual attributes that tastes are defined over
(hue, background pattern, shape) and continuous nuisance (exact hue angle,
saturation, size, position, background tint), so that a model must look at the
pixels, not at an id. Rendering is deterministic for given attributes.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

HUES = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
HUE_DEGREES = (0, 30, 55, 120, 175, 225, 275, 320)
PATTERNS = ("plain", "stripes", "dots", "checks")
SHAPES = ("circle", "square", "triangle", "star")
N_CLASSES = len(HUES) * len(PATTERNS) * len(SHAPES)
_SUPERSAMPLE = 2  # draw at 2x and downsample: smooth edges without a font or anti-aliasing API


@dataclass(frozen=True)
class ImageSpec:
    hue: int  # index into HUES
    pattern: int  # index into PATTERNS
    shape: int  # index into SHAPES
    hue_jitter: float  # degrees added to the hue's centre
    saturation: float
    value: float
    scale: float  # shape size as a share of the image side
    dx: float  # centre offset, share of the side
    dy: float
    bg_light: float  # background lightness
    bg_hue: float  # background tint hue in [0, 1)

    @property
    def caption(self) -> str:
        return f"a {HUES[self.hue]} {SHAPES[self.shape]} on a {PATTERNS[self.pattern]} background"


def random_specs(rng: np.random.Generator, n: int) -> list[ImageSpec]:
    """n images with uniformly drawn attributes and nuisance."""
    hue, pattern, shape = rng.integers(0, len(HUES), n), rng.integers(0, len(PATTERNS), n), rng.integers(0, len(SHAPES), n)
    jitter, sat, val = rng.uniform(-8, 8, n), rng.uniform(0.65, 0.95, n), rng.uniform(0.7, 0.95, n)
    scale, dx, dy = rng.uniform(0.45, 0.7, n), rng.uniform(-0.08, 0.08, n), rng.uniform(-0.08, 0.08, n)
    light, bg_hue = rng.uniform(0.8, 0.95, n), rng.uniform(0, 1, n)
    return [ImageSpec(int(hue[i]), int(pattern[i]), int(shape[i]), float(jitter[i]), float(sat[i]), float(val[i]),
                      float(scale[i]), float(dx[i]), float(dy[i]), float(light[i]), float(bg_hue[i])) for i in range(n)]


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _background(draw: ImageDraw.ImageDraw, spec: ImageSpec, side: int) -> None:
    base = _rgb(spec.bg_hue, 0.12, spec.bg_light)
    ink = _rgb(spec.bg_hue, 0.18, spec.bg_light - 0.3)
    draw.rectangle((0, 0, side, side), fill=base)
    step = side // 8
    if PATTERNS[spec.pattern] == "stripes":
        for x in range(-side, side, step):
            draw.line((x, side, x + side, 0), fill=ink, width=max(1, step // 3))
    elif PATTERNS[spec.pattern] == "dots":
        for x in range(step // 2, side, step):
            for y in range(step // 2, side, step):
                draw.ellipse((x - step // 5, y - step // 5, x + step // 5, y + step // 5), fill=ink)
    elif PATTERNS[spec.pattern] == "checks":
        for i, x in enumerate(range(0, side, step)):
            for j, y in enumerate(range(0, side, step)):
                if (i + j) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=ink)


def _shape(draw: ImageDraw.ImageDraw, spec: ImageSpec, side: int) -> None:
    colour = _rgb((HUE_DEGREES[spec.hue] + spec.hue_jitter) / 360.0, spec.saturation, spec.value)
    cx, cy, r = side * (0.5 + spec.dx), side * (0.5 + spec.dy), side * spec.scale / 2
    name = SHAPES[spec.shape]
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif name == "square":
        draw.rectangle((cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85), fill=colour)
    elif name == "triangle":
        draw.polygon([(cx, cy - r), (cx - r * 0.95, cy + r * 0.8), (cx + r * 0.95, cy + r * 0.8)], fill=colour)
    else:
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        draw.polygon([(cx + a * np.cos(t), cy - a * np.sin(t)) for a, t in zip(radii, angles)], fill=colour)


def render(spec: ImageSpec, size: int) -> Image.Image:
    side = size * _SUPERSAMPLE
    image = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(image)
    _background(draw, spec, side)
    _shape(draw, spec, side)
    return image.resize((size, size), Image.Resampling.BOX)
