"""Small bundle folders for registry tests: real safetensors and JSON files, not trained models."""

from pathlib import Path

import torch
from safetensors.torch import save_file

from prefgen.generation.config import GuidanceConfig
from prefgen.registry.bundle import PARTS, assemble
from prefgen.vision.config import VisualFeaturesConfig


def model_folders(root: Path, seed: int) -> dict[str, Path]:
    """One folder per bundle part holding weights (differing by seed) and a config."""
    torch.manual_seed(seed)
    parts = {}
    for name in PARTS:
        folder = root / f"models-{seed}" / name
        folder.mkdir(parents=True)
        save_file({"weight": torch.randn(4, 4)}, folder / "model.safetensors")
        (folder / "config.json").write_text('{"dim": 4}')
        parts[name] = folder
    return parts


def make_bundle(root: Path, seed: int, lineage: dict | None = None) -> tuple[Path, str]:
    out = root / f"bundle-{seed}"
    digest = assemble(model_folders(root, seed), torch.ones(3, 4), VisualFeaturesConfig(), GuidanceConfig(steps=5),
                      lineage or {"git": {"git.commit": "abc"}}, out)
    return out, digest
