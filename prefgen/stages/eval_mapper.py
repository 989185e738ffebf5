"""DVC stage `eval_mapper`: params.yaml [train_mapper] and [trainer] (the VBPR baseline trains with the mapper's
settings, on the trainer's device), Step 2's mapper (paths.mapper) on the cold images against VBPR, random and the
world's truth (paths.truth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefgen.eval import mapper
from prefgen.paths import Paths
from prefgen.training.config import Training, training_section
from prefgen.vision.config import TrainMapperConfig

USER_ERRORS = (FileNotFoundError,)  # no ground truth (synth not run) or an input stage not run


def load_config(params: dict[str, Any] | None) -> Training[TrainMapperConfig]:
    return training_section(params, TrainMapperConfig, "train_mapper")


def run(cfg: Training[TrainMapperConfig], paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    return mapper.evaluate(cfg, paths, log=log)
