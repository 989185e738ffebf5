"""Every params.yaml section and its typed config: the one place a section name meets its class.

Each stage's config lives beside its code (prefgen/data/config.py, prefgen/preference/config.py, ...),
so a stage imports only its own; this registry is for the entry points (the CLI, the flows, the
registry), which read whole params files. Unknown or missing keys are errors: a typo in params.yaml
must not silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefgen.data.config import ForgetConfig, IngestConfig, SplitConfig, SynthConfig
from prefgen.eval.config import (
    EvalGenerationConfig,
    EvalGraphConfig,
    EvalGuidanceConfig,
    EvalHoldoutConfig,
    ReferenceConfig,
    TrainJudgesConfig,
    TrainOracleConfig,
)
from prefgen.generation.config import GuidanceConfig, TrainDiffusionConfig, TrainVQConfig, TrainWConfig
from prefgen.params import DEFAULT_PARAMS, ConfigError, check_sections, from_section, load_params, read_yaml, resolve_section
from prefgen.paths import Paths
from prefgen.preference.config import TrainGraphConfig
from prefgen.registry.config import RegistryConfig
from prefgen.serving.config import NightlyConfig
from prefgen.social.config import CentralityConfig
from prefgen.tracking_config import TrackingConfig
from prefgen.training.config import TrainerConfig
from prefgen.vision.config import ClipConfig, ImageStoreConfig, PrepareImagesConfig, TrainMapperConfig, VisualFeaturesConfig

__all__ = ["DEFAULT_PARAMS", "SECTIONS", "ConfigError", "checked_params", "load_params", "section_config"]


SECTIONS: dict[str, type] = {
    "synth": SynthConfig, "ingest": IngestConfig, "forget": ForgetConfig, "split": SplitConfig, "centrality": CentralityConfig,
    "reference": ReferenceConfig, "eval_graph": EvalGraphConfig, "train_graph": TrainGraphConfig, "tracking": TrackingConfig,
    "train_clip": ClipConfig, "visual_features": VisualFeaturesConfig, "train_mapper": TrainMapperConfig,
    "train_vq": TrainVQConfig, "train_w": TrainWConfig, "train_diffusion": TrainDiffusionConfig,
    "sampler": GuidanceConfig, "train_oracle": TrainOracleConfig, "eval_generation": EvalGenerationConfig,
    "registry": RegistryConfig, "nightly": NightlyConfig, "trainer": TrainerConfig,
    "prepare_images": PrepareImagesConfig, "image_store": ImageStoreConfig, "eval_holdout": EvalHoldoutConfig,
    "train_judges": TrainJudgesConfig, "eval_guidance": EvalGuidanceConfig,
}


def section_config(params: dict[str, Any] | None, name: str) -> Any:
    """The typed config of section `name`, the active profile merged in where the section has profiles.

    `params` None (a standalone run with no params file) gives the defaults; a params file that lacks
    the section, or has a section no config knows (a misspelling), is an error, never silent defaults.
    """
    if name not in SECTIONS:
        raise ConfigError(f"unknown params section '{name}'; known: {sorted(SECTIONS)}")
    if params is None:
        return SECTIONS[name]()
    check_sections(params, SECTIONS, name)
    return from_section(SECTIONS[name], resolve_section(params, SECTIONS[name], name), name)


# Sections the flows and the registry read whatever stages a pipeline has (the bundle, the nightly, deletion requests).
ENTRY_POINT_SECTIONS = ("tracking", "registry", "nightly", "sampler", "visual_features", "forget")


def checked_params(path: Path) -> dict[str, Any]:
    """params.yaml with every section built into its typed config, so a flow names a mistake before it starts.

    Every section the file has is checked; a missing one is an error when the dvc.yaml beside it lists it, or an
    entry point reads it (a pipeline folder drops the sections of the stages it has not); without a dvc.yaml, every
    section must be there."""
    params = load_params(path)
    for name in SECTIONS:
        if name in params or name in required_sections(path.parent / "dvc.yaml"):
            section_config(params, name)
    Paths.from_params(params)
    return params


def required_sections(dvc_yaml: Path) -> set[str]:
    """The sections a pipeline cannot run without: those its dvc.yaml's stages list, and the entry points'."""
    if not dvc_yaml.is_file():
        return set(SECTIONS)
    stages = (read_yaml(dvc_yaml) or {}).get("stages") or {}
    listed = {str(entry).split(".")[0] for spec in stages.values() if isinstance(spec, dict) for entry in spec.get("params") or []}
    return (listed & set(SECTIONS)) | set(ENTRY_POINT_SECTIONS)


def tracking_config(params: dict[str, Any]) -> TrackingConfig:
    return section_config(params, "tracking")
