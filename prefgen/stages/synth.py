"""DVC stage `synth`: params.yaml [synth] -> data/01_raw/<world>, data/truth/<world>, metrics, an MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefgen.config import SynthConfig
from prefgen.data import synth
from prefgen.stages.common import run_stage


def run(cfg: SynthConfig, params: dict[str, Any] | None, metrics_path: Path | None, root: Path) -> dict[str, Any]:
    return run_stage("synth", params, root, metrics_path, lambda: synth.run(cfg, Path(cfg.out_dir), Path(cfg.truth_dir)))
