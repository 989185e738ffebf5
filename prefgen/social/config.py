"""Typed config of the `centrality` stage (params.yaml section)."""

from __future__ import annotations

from dataclasses import dataclass

from prefgen.params import ConfigError


@dataclass(frozen=True)
class CentralityConfig:
    """Stage `centrality`: per-individual and per-(group, member) social features."""

    # Below this many nodes betweenness and harmonic closeness are exact; above it
    # they are estimated from `pivots` sampled sources (exact is O(n*m)).
    exact_threshold: int = 5_000
    pivots: int = 256  # sampled BFS sources above the threshold (error ~ 1/sqrt(pivots))
    damping: float = 0.85  # PageRank damping factor
    seed: int = 0  # pivot sampling
    threads: int = 2  # library threads; the CI machine has 2 cores

    def __post_init__(self) -> None:
        if self.pivots < 1 or self.exact_threshold < 0 or self.threads < 1:
            raise ConfigError("params.centrality: pivots and threads must be >= 1, exact_threshold >= 0")
        if not 0 < self.damping < 1:
            raise ConfigError("params.centrality.damping must be in (0, 1)")
