"""The evaluation oracle: what a generated image of the synthetic world shows, judged without any model under test.

    hue      an exact pixel measure: the shape is the only saturated region (backgrounds are tinted
             at saturation <= 0.18, shapes drawn at >= 0.65), so its hue is the circular mean of the
             HSV hue over saturated pixels, snapped to the nearest of render.HUE_DEGREES.
    shape    a small CNN with two heads, trained on a separately seeded set of renders
    pattern  (render.random_specs with the oracle's own seed: no world image is ever seen), with a
             random blur and noise, since generated images are softer than renders.

The CNN's penultimate layer is also the feature space of the Fréchet distance in
`prefgen eval generation`. The oracle judges images only; nothing in prefgen/generation
may import it (tests/eval/test_oracle.py checks), so it is never a guide.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torchvision.transforms.v2.functional import gaussian_blur

from prefgen.checkpoint import replace_folder
from prefgen.data.render import HUE_DEGREES, PATTERNS, SHAPES, random_specs, render
from prefgen.eval.config import TrainOracleConfig
from prefgen.params import from_saved

WEIGHTS, CONFIG = "oracle.safetensors", "config.json"
MIN_SATURATION = 0.35  # between the background ink's 0.18 and the shapes' 0.65
MIN_AREA = 0.01  # share of pixels: below this the image shows no coloured shape and its hue is unread (-1)


def _hsv(pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per pixel HSV of (B, 3, H, W) in [0, 1]: hue in degrees, saturation, value (as colorsys computes them)."""
    r, g, b = pixels.unbind(1)
    top, bottom = pixels.max(1).values, pixels.min(1).values
    delta = (top - bottom).clamp_min(1e-8)
    hue = torch.where(top == r, ((g - b) / delta) % 6, torch.where(top == g, (b - r) / delta + 2, (r - g) / delta + 4))
    return hue * 60, (top - bottom) / top.clamp_min(1e-8), top


def measure_hue(pixels: Tensor) -> Tensor:
    """(B,) index into render.HUES of each image's shape colour; -1 where fewer than MIN_AREA pixels are saturated."""
    hue, saturation, value = _hsv(pixels)
    weight = ((saturation > MIN_SATURATION) & (value > 0.3)).float() * saturation
    angle = torch.deg2rad(hue)
    x, y = (weight * angle.cos()).flatten(1).sum(1), (weight * angle.sin()).flatten(1).sum(1)
    mean = torch.rad2deg(torch.atan2(y, x)) % 360
    centres = torch.tensor(HUE_DEGREES, dtype=mean.dtype, device=mean.device)
    gap = (mean[:, None] - centres[None]).abs() % 360
    nearest = torch.minimum(gap, 360 - gap).argmin(1)
    readable = (weight > 0).float().flatten(1).mean(1) >= MIN_AREA
    return torch.where(readable, nearest, torch.full_like(nearest, -1))


class OracleNet(nn.Module):
    """Four conv blocks (64 -> 4 pixels), global pooling, a feature layer, and a head each for shape and pattern."""

    def __init__(self, width: int = 32, feature_dim: int = 64):
        super().__init__()
        channels = (3, width, 2 * width, 2 * width, 4 * width)
        blocks = [nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))
                  for a, b in zip(channels, channels[1:])]
        self.trunk = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, feature_dim), nn.ReLU())
        self.shape_head, self.pattern_head = nn.Linear(feature_dim, len(SHAPES)), nn.Linear(feature_dim, len(PATTERNS))

    def features(self, pixels: Tensor) -> Tensor:
        return self.trunk(pixels * 2 - 1)

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(pixels)
        return self.shape_head(f), self.pattern_head(f)


@dataclass
class Reading:
    """What the oracle reads from a batch of images: attribute indexes (hue -1 = unread) and features."""

    hue: np.ndarray
    shape: np.ndarray
    pattern: np.ndarray
    features: np.ndarray


class Oracle:
    """The judge of generated images: `read` runs where its network is (`Oracle.load(folder, device)`), whatever
    device the pixels come from, and hands numpy arrays back."""

    def __init__(self, net: OracleNet, image_size: int):
        self.net, self.image_size = net.eval(), image_size

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "cpu") -> Oracle:
        if not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(f"no oracle in {folder} (run the train_oracle stage)")
        saved = json.loads((folder / CONFIG).read_text())["train_oracle"]
        # Oracles saved when the config still held its output paths load all the same.
        cfg = from_saved(TrainOracleConfig, saved)
        net = OracleNet(cfg.width, cfg.feature_dim)
        net.load_state_dict(load_file(folder / WEIGHTS))
        return cls(net.to(device), cfg.image_size)

    @torch.no_grad()
    def read(self, pixels: Tensor, batch_size: int = 256) -> Reading:
        if pixels.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"the oracle reads (B, 3, {self.image_size}, {self.image_size}) images, got {tuple(pixels.shape)}")
        parts, dtype = [], next(self.net.parameters()).dtype
        for chunk in pixels.split(batch_size):
            chunk = chunk.to(self.device, dtype)
            f = self.net.features(chunk)
            parts.append((measure_hue(chunk), self.net.shape_head(f).argmax(1), self.net.pattern_head(f).argmax(1), f))
        hue, shape, pattern, features = (torch.cat(p).cpu().numpy() for p in zip(*parts))
        return Reading(hue, shape, pattern, features)


def rendered_set(n: int, size: int, seed: int) -> tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """n renders with uniform attributes from `seed`: pixels (n, 3, size, size) uint8, and hue, shape, pattern indexes."""
    specs = random_specs(np.random.default_rng(seed), n)
    pixels = torch.from_numpy(np.stack([np.asarray(render(s, size)) for s in specs])).permute(0, 3, 1, 2).contiguous()
    attrs = (np.array([getattr(s, a) for s in specs]) for a in ("hue", "shape", "pattern"))
    return pixels, *attrs


def _augment(x: Tensor, cfg: TrainOracleConfig, gen: torch.Generator) -> Tensor:
    sigma = float(torch.rand((), generator=gen)) * cfg.blur_max
    if sigma > 0.1:
        x = gaussian_blur(x, kernel_size=2 * math.ceil(2 * sigma) + 1, sigma=sigma)
    noise = torch.randn(x.shape, generator=gen) * torch.rand((len(x), 1, 1, 1), generator=gen) * cfg.noise_max
    return (x + noise).clamp(0, 1)


def fit(cfg: TrainOracleConfig, log=print) -> OracleNet:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    pixels, _, shape, pattern = rendered_set(cfg.n_train, cfg.image_size, cfg.seed)
    shape, pattern = torch.as_tensor(shape), torch.as_tensor(pattern)
    net = OracleNet(cfg.width, cfg.feature_dim)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    steps = cfg.epochs * math.ceil(cfg.n_train / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=steps)
    for epoch in range(cfg.epochs):
        net.train()
        order, started, total = torch.randperm(cfg.n_train, generator=gen), time.perf_counter(), 0.0
        for batch in order.split(cfg.batch_size):
            x = _augment(pixels[batch].float() / 255, cfg, gen)
            shape_logits, pattern_logits = net(x)
            loss = F.cross_entropy(shape_logits, shape[batch]) + F.cross_entropy(pattern_logits, pattern[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        log(f"oracle epoch {epoch + 1}/{cfg.epochs}: loss {total / cfg.n_train:.4f} ({time.perf_counter() - started:.1f}s)")
    return net.eval()


def accuracy(reading: Reading, hue: np.ndarray, shape: np.ndarray, pattern: np.ndarray) -> dict[str, float]:
    return {"hue_accuracy": float((reading.hue == hue).mean()), "shape_accuracy": float((reading.shape == shape).mean()),
            "pattern_accuracy": float((reading.pattern == pattern).mean())}


def run(cfg: TrainOracleConfig, out: Path, log=print) -> dict[str, float]:
    """Train the classifier, save it to `out` (atomically), and report the oracle's accuracy on unseen renders, sharp and blurred."""
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    net = fit(cfg, log)

    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder / WEIGHTS)
        (folder / CONFIG).write_text(json.dumps({"train_oracle": asdict(cfg)}, indent=2) + "\n")

    replace_folder(out, write)
    oracle = Oracle(net, cfg.image_size)
    pixels, hue, shape, pattern = rendered_set(cfg.n_test, cfg.image_size, cfg.seed + 1)
    x = pixels.float() / 255
    sharp = accuracy(oracle.read(x), hue, shape, pattern)
    blurred = accuracy(oracle.read(gaussian_blur(x, kernel_size=5, sigma=1.0)), hue, shape, pattern)
    return {**{f"test_{k}": v for k, v in sharp.items()}, **{f"test_blur1_{k}": v for k, v in blurred.items()},
            "test_images": cfg.n_test, "train_images": cfg.n_train, "train_seconds": time.perf_counter() - started}
