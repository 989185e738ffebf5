"""The `registry` section of params.yaml: what a bundle holds, and the champion gate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from prefgen.params import ConfigError
from prefgen.paths import Paths


@dataclass(frozen=True)
class GateMetric:
    """One metric the champion gate compares, new bundle against the current champion.

    `name` is `<stage>.<key>` of the stage's metrics file, e.g. `eval_mapper.cold_auc`
    reads paths.metrics_file("eval_mapper")["cold_auc"].
    """

    name: str
    direction: str = "max"  # "max": higher is better; "min": lower is better
    # How much worse than the champion the new bundle may be and still pass: the metrics are
    # estimates with wide bootstrap intervals, so an exact "not lower" would refuse good retrains on noise.
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ConfigError(f"params.registry.gate_metrics: {self.name}: direction must be 'max' or 'min', not {self.direction!r}")
        if self.tolerance < 0:
            raise ConfigError(f"params.registry.gate_metrics: {self.name}: tolerance must be >= 0")
        if "." not in self.name:
            raise ConfigError(f"params.registry.gate_metrics: {self.name!r} must read '<metrics file>.<key>'")


@dataclass(frozen=True)
class GateFloor:
    """A floor no bundle may be under to become champion, the first one included: `metric` must exceed the baseline
    `above_metric` measured in the same evaluation (e.g. Step 1's HR@10 over popularity's), or the number `above`
    where no baseline is named (e.g. the low end of an interval of a difference above 0)."""

    metric: str
    above_metric: str = ""
    above: float = 0.0

    def __post_init__(self) -> None:
        for name in (self.metric, self.above_metric):
            if name and "." not in name:
                raise ConfigError(f"params.registry.floors: {name!r} must read '<metrics file>.<key>'")

    def names(self) -> list[str]:
        return [self.metric, *([self.above_metric] if self.above_metric else [])]


@dataclass(frozen=True)
class RegistryConfig:
    """Section `registry`: one MLflow model whose versions are bundles of every model a retrain made."""

    model_name: str = "prefgen-bundle"
    # The evaluation set the gate's metrics were measured on: catalogue keys (prefgen/paths.py) of files
    # or folders; params.yaml adds the world's truth. Its digest is recorded with every bundle; the gate
    # compares two bundles only when they were judged on the same set.
    eval_set: list[str] = field(default_factory=lambda: ["split"])
    eval_set_sha256: str = ""  # when set, the gate refuses a bundle judged on any other evaluation set
    gate_metrics: list[GateMetric] = field(default_factory=list)
    floors: list[GateFloor] = field(default_factory=list)  # checked before any comparison with the champion

    def judged_metrics(self) -> list[str]:
        """Every metric the gate reads: the compared ones, and the floors' metrics and baselines."""
        names = [m.name for m in self.gate_metrics] + [name for floor in self.floors for name in floor.names()]
        return list(dict.fromkeys(names))

    def __post_init__(self) -> None:
        names = [m.name for m in self.gate_metrics]
        if len(set(names)) != len(names):
            raise ConfigError(f"params.registry.gate_metrics names a metric twice: {names}")
        keys = [f.name for f in dataclasses.fields(Paths)]
        unknown = [entry for entry in self.eval_set if entry not in keys]
        if unknown:
            raise ConfigError(f"params.registry.eval_set: {unknown[0]!r} is not a catalogue key; use keys of params.paths: {keys}")
