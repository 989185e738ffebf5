"""The champion gate: does a new bundle's evaluation allow it to replace the champion?

Pure functions of numbers: the registry code reads the metrics and moves aliases.

    passes  <=>  every floor holds: metric > its baseline in the same evaluation (or > a number)
                 and same evaluation set as the champion (and as the pinned one, if pinned)
                 and, for every gate metric m:   new_m >= champion_m - tol_m   (direction max)
                                                 new_m <= champion_m + tol_m   (direction min)
The first bundle, with no champion to compare, passes if it has every gate metric and is above every floor; a
bundle under a floor never passes. A gate with no metric (a
pipeline folder on a platform's data, with no evaluation of its own yet) passes nothing: its bundles are
challengers until `prefgen promote`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from prefgen.paths import Paths
from prefgen.registry.config import GateFloor, GateMetric

NO_GATE_METRIC = "no gate metric: a bundle becomes champion only by `prefgen promote`"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # one line per check, failed ones first

    def summary(self) -> str:
        return ("passed: " if self.passed else "refused: ") + "; ".join(self.reasons)


def read_gate_metrics(paths: Paths, names: list[str]) -> dict[str, float]:
    """{name: value} of the named metrics (`<stage>.<key>`, dotted into nested blocks) found in the stages' metrics
    files (`paths.metrics_file(<stage>)`); absent ones are left out."""
    values = {}
    for name in names:
        stem, key = name.split(".", 1)
        path = paths.metrics_file(stem)
        if not path.is_file():
            continue
        value = json.loads(path.read_text(encoding="utf-8"))
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            values[name] = float(value)
    return values


def check_floors(floors: list[GateFloor], new: dict[str, float]) -> list[str]:
    """One line per floor the bundle is not above, or whose figures it lacks."""
    failed = []
    for floor in floors:
        missing = [name for name in floor.names() if name not in new]
        if missing:
            failed.append(f"floor {floor.metric}: {missing} not measured for this bundle")
            continue
        bound, what = (new[floor.above_metric], floor.above_metric) if floor.above_metric else (floor.above, "")
        if not new[floor.metric] > bound:
            failed.append(f"{floor.metric} {new[floor.metric]:.4f} is not above {what or 'the floor'} {bound:.4f} (BELOW FLOOR)")
    return failed


def _compare(metric: GateMetric, new: float, old: float) -> tuple[bool, str]:
    if metric.direction == "max":
        ok, bound, sign = new >= old - metric.tolerance, old - metric.tolerance, ">="
    else:
        ok, bound, sign = new <= old + metric.tolerance, old + metric.tolerance, "<="
    verdict = "ok" if ok else "WORSE"
    return ok, f"{metric.name} {new:.4f} vs champion {old:.4f} ({verdict}: needs {sign} {bound:.4f})"


def decide(gate: list[GateMetric], new: dict[str, float], new_eval_set: str,
           champion: dict[str, float] | None, champion_eval_set: str | None, pinned_eval_set: str = "",
           floors: list[GateFloor] | None = None) -> GateDecision:
    """Whether a bundle with metrics `new` may replace the champion (None: there is none yet)."""
    if pinned_eval_set and new_eval_set != pinned_eval_set:
        return GateDecision(False, [f"evaluated on evaluation set {new_eval_set[:12]}, but params pin {pinned_eval_set[:12]}"])
    below = check_floors(floors or [], new)
    if below:
        return GateDecision(False, below)
    if not gate:
        return GateDecision(False, [NO_GATE_METRIC])
    missing = [m.name for m in gate if m.name not in new]
    if missing:
        return GateDecision(False, [f"gate metric(s) {missing} not measured for this bundle"])
    if champion is None:
        return GateDecision(True, ["no champion yet: the first bundle with every gate metric becomes champion"])
    if champion_eval_set != new_eval_set:
        return GateDecision(False, [(f"the champion was judged on evaluation set {str(champion_eval_set)[:12]}, this bundle on "
                                     f"{new_eval_set[:12]}: not comparable; compare by hand, then `prefgen promote`")])
    lacking = [m.name for m in gate if m.name not in champion]
    if lacking:
        return GateDecision(False, [f"the champion has no value for {lacking}: not comparable; `prefgen promote` by hand"])
    checks = [_compare(m, new[m.name], champion[m.name]) for m in gate]
    failed = [line for ok, line in checks if not ok]
    return GateDecision(not failed, failed + [line for ok, line in checks if ok])
