"""PreferenceScorer: pref(g, x) = D(p_g, G(v(x))) for any segment with a Step 1 vector and any image.

The product's metric ("how well does this image fit segment g") and the
preference guide of Step 3: differentiable with respect to the input pixels,
since v = s ⊕ t ⊕ c is computed by differentiable extractors.

    scorer = PreferenceScorer.from_outputs(mapper_dir, graph_dir, clip_dir, visual_cfg)
    scorer.score(["grp:g7", "ind:u3"], images=pixels)      # (2, B) in (0, 1)
    scorer.score(["grp:g7"], features=v)                    # precomputed v
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from prefgen.params import from_saved
from prefgen.vision.config import TrainMapperConfig, VisualFeaturesConfig
from prefgen.vision.extractors import check_pixels, extractors
from prefgen.vision.mapper import Discriminator, Generator, preference

MAPPER_FILE, CONFIG_FILE = "mapper.safetensors", "config.json"


class UnknownSegmentError(KeyError):
    """Segment ids with no Step 1 vector; the message lists them."""


def build_models(state: dict[str, Tensor], cfg: TrainMapperConfig) -> tuple[Generator, Discriminator]:
    g_state = {k[2:]: v for k, v in state.items() if k.startswith("g.")}
    d_state = {k[2:]: v for k, v in state.items() if k.startswith("d.")}
    g = Generator(g_state["feature_mean"], g_state["feature_std"], d_state["bilinear.weight"].shape[0], cfg.hidden)
    d = Discriminator(d_state["bilinear.weight"], cfg.hidden)
    g.load_state_dict(g_state), d.load_state_dict(d_state)
    return g.eval(), d.eval()


def read_mapper_config(mapper_dir: Path) -> TrainMapperConfig:
    """The config a trained mapper folder was saved with."""
    return from_saved(TrainMapperConfig, json.loads((mapper_dir / CONFIG_FILE).read_text())["train_mapper"])


class PreferenceScorer(nn.Module):
    """pref(g, x) for Step 1's segments: the feature extractors, G, D and every segment's p_g in one module, so
    `.to(device)` places all of it; scores are computed where the module is.

    Args:
        g, d: the trained mapper (stage `train_mapper`).
        p (Tensor): (segments, 2d) Step 1 preference vectors; segment_row maps a segment id to its row.
        visual_cfg: the visual-feature settings; parts: which of v = s ⊕ t ⊕ c the mapper reads.
        clip_dir (Path): the CLIP tower computing s.
    """

    def __init__(self, g: Generator, d: Discriminator, p: Tensor, segment_row: dict[str, int], visual_cfg: VisualFeaturesConfig,
                 parts: tuple[str, ...], clip_dir: Path):
        super().__init__()
        self.g, self.d, self.segment_row, self.parts, self.image_size = g, d, segment_row, parts, visual_cfg.image_size
        self.register_buffer("p", p)
        self.extractors = nn.ModuleDict({part: m for part, (_, m) in extractors(visual_cfg, clip_dir).items() if part in parts})
        self.requires_grad_(False)  # the scorer is a fixed function; gradients flow to pixels only

    @classmethod
    def from_outputs(cls, mapper_dir: Path, graph_dir: Path, clip_dir: Path, visual_cfg: VisualFeaturesConfig) -> PreferenceScorer:
        from prefgen.vision.mapper_data import load_step1  # reads tables with polars: the scorer itself must not need it

        cfg = read_mapper_config(mapper_dir)
        g, d = build_models(load_file(mapper_dir / MAPPER_FILE), cfg)
        step1 = load_step1(graph_dir)
        return cls(g, d, step1.p, step1.segment_row, visual_cfg, cfg.part_names, clip_dir)

    def features(self, pixels: Tensor) -> Tensor:
        """v(x): (B, 3, H, W) in [0, 1] -> (B, Dv), differentiable."""
        check_pixels(pixels, self.image_size)
        return torch.cat([self.extractors[part](pixels) for part in self.parts], dim=1)

    def rows(self, segment_ids: list[str]) -> Tensor:
        missing = [s for s in segment_ids if s not in self.segment_row]
        if missing:
            raise UnknownSegmentError(f"{len(missing)} unknown segment(s), e.g. {missing[:5]}; ids look like 'ind:<id>' or 'grp:<id>'")
        return torch.as_tensor([self.segment_row[s] for s in segment_ids], device=self.p.device)

    def score(self, segment_ids: list[str], images: Tensor | None = None, features: Tensor | None = None,
              batch_size: int = 256) -> Tensor:
        """(len(segment_ids), B) preferences in (0, 1); every segment against every image, computed on the scorer's
        device (images or features elsewhere are moved there)."""
        if (images is None) == (features is None):
            raise ValueError("give exactly one of images= (pixels) or features= (precomputed v)")
        p = self.p[self.rows(segment_ids)]
        n = len(images if images is not None else features)
        out = []
        for start in range(0, n, batch_size):
            chunk = (images if images is not None else features)[start : start + batch_size].to(self.p.device)
            v = self.features(chunk) if images is not None else chunk
            out.append(preference(self.g, self.d, p, v.to(p.dtype)))
        return torch.cat(out, dim=1)

