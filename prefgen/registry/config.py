"""The `registry` section of params.yaml: what a bundle holds, and the champion gate."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefgen.params import ConfigError


@dataclass(frozen=True)
class GateMetric:
    """One metric the champion gate compares, new bundle against the current champion.

    `name` is `<metrics file stem>.<key>` in the pipeline's metrics folder, e.g.
    `eval_mapper.cold_auc` reads data/metrics/eval_mapper.json["cold_auc"].
    """

    name: str
    direction: str = "max"  # "max": higher is better; "min": lower is better
    # How much worse than the champion the new bundle may be and still pass: the metrics are
    # estimates (bootstrap intervals of ~0.08 on win rate), so an exact "not lower" would
    # refuse good retrains on noise.
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ConfigError(f"params.registry.gate_metrics: {self.name}: direction must be 'max' or 'min', not {self.direction!r}")
        if self.tolerance < 0:
            raise ConfigError(f"params.registry.gate_metrics: {self.name}: tolerance must be >= 0")
        if "." not in self.name:
            raise ConfigError(f"params.registry.gate_metrics: {self.name!r} must read '<metrics file>.<key>'")


@dataclass(frozen=True)
class RegistryConfig:
    """Section `registry`: one MLflow model whose versions are bundles of every model a retrain made."""

    model_name: str = "prefgen-bundle"
    # The parts of a bundle: name -> the stage output folder it is copied from. All of them
    # travel together: a bundle is what one retrain trained, never a mix of versions.
    graph_dir: str = "data/04_models/graph"
    mapper_dir: str = "data/04_models/mapper"
    clip_dir: str = "data/04_models/clip"
    vq_dir: str = "data/04_models/vq"
    w_dir: str = "data/04_models/w"
    diffusion_dir: str = "data/04_models/diffusion"
    # Needed to rebuild the sampler's prototype catalogue (G of the train images' features), which
    # the bundle stores as a tensor so that it needs no feature files to run.
    features_dir: str = "data/03_features/visual"
    split: str = "data/03_features/split.parquet"
    metrics_dir: str = "data/metrics"
    # The evaluation set the gate's metrics were measured on (files or folders; params.yaml adds the
    # world's evaluation folder). Its digest is recorded with every bundle; the gate compares two
    # bundles only when they were judged on the same set.
    eval_set: list[str] = field(default_factory=lambda: ["data/03_features/split.parquet"])
    eval_set_sha256: str = ""  # when set, the gate refuses a bundle judged on any other evaluation set
    gate_metrics: list[GateMetric] = field(default_factory=list)
    staging_dir: str = "data/06_bundle"  # where `prefgen register` assembles a bundle before logging it

    def __post_init__(self) -> None:
        names = [m.name for m in self.gate_metrics]
        if len(set(names)) != len(names):
            raise ConfigError(f"params.registry.gate_metrics names a metric twice: {names}")

    @property
    def parts(self) -> dict[str, str]:
        return {"graph": self.graph_dir, "mapper": self.mapper_dir, "clip": self.clip_dir, "vq": self.vq_dir,
                "w": self.w_dir, "diffusion": self.diffusion_dir}
