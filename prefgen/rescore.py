"""The champion judged again where the challenger was judged, so the gate compares like with like.

A retrain on new logs is judged on a new evaluation set (a new split, a new held-out window), and a champion judged
under older metric names lacks the gate's names: in both cases its own figures cannot be compared. A bundle holds
every model its retrain made (bundle.PARTS), so the gate's evaluation stages run again with the catalogue's model
keys pointing into the champion's bundle and everything else at the challenger's data (tables, split, prepared
images). A stage between a model and an evaluation that is not itself a model (the visual features, which the
bundle's CLIP tower computes) runs again too. Everything is written into a temporary folder: nothing of the
challenger's pipeline changes. It runs stages by the table of stages, so it is wiring: the entry points (the retrain
flow, `prefgen register`) hand `rescore_bundle` to the registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefgen.atomic import write_json_atomic
from prefgen.paths import Paths
from prefgen.registry.bundle import PARTS, Bundle
from prefgen.registry.gate import read_gate_metrics
from prefgen.stage_table import BY_NAME, STAGES, Stage


def _writer(key: str) -> Stage | None:
    return next((stage for stage in STAGES if key in stage.writes), None)


def _from_models(stage: Stage) -> bool:
    """Whether the stage's output depends on a bundle model without being one (it must run again on the champion's)."""
    if any(key in PARTS for key in stage.writes):
        return False
    return any(key in PARTS or (_writer(key) is not None and _from_models(_writer(key))) for key in stage.reads)


def stages_to_rerun(metric_names: list[str]) -> list[Stage]:
    """The stages that compute the named metrics from a bundle's models, and those between, in pipeline order."""
    wanted = {name.split(".", 1)[0] for name in metric_names}
    unknown = sorted(wanted - set(BY_NAME))
    if unknown:
        raise ValueError(f"gate metric(s) of {unknown}: no such stage, so the champion cannot be judged again")
    needed: set[str] = set()

    def need(stage: Stage) -> None:
        needed.add(stage.name)
        for key in stage.reads:
            writer = _writer(key)
            if key not in PARTS and writer is not None and _from_models(writer):
                need(writer)

    for name in wanted:
        need(BY_NAME[name])
    return [stage for stage in STAGES if stage.name in needed]


def rescore_bundle(params: dict[str, Any], root: Path, bundle: Bundle, metric_names: list[str],
                   log: Callable[[str], None] = print) -> dict[str, float]:
    """{metric: value} of the bundle's models on this pipeline's evaluation set (module docstring)."""
    stages = stages_to_rerun(metric_names)
    paths = Paths.from_params(params).rooted(root)
    with tempfile.TemporaryDirectory(prefix="prefgen-rescore-") as tmp:
        outputs = {key: Path(tmp) / key for stage in stages for key in stage.writes if key not in PARTS}
        judged = dataclasses.replace(paths, **{part: bundle.model_dir(part) for part in PARTS}, **outputs,
                                     metrics=Path(tmp) / "metrics")
        for stage in stages:
            log(f"rescore: {stage.name} on the champion's models")
            module = importlib.import_module(f"prefgen.stages.{stage.name}")
            result = module.run(module.load_config(params), judged, log)
            write_json_atomic(judged.metrics_file(stage.name), {k: v for k, v in result.items() if k not in stage.not_metrics})
        return read_gate_metrics(judged, metric_names)
