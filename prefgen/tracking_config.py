"""Typed config of MLflow tracking, shared by every stage (params.yaml section `tracking`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking shared by every stage."""

    # Used when MLFLOW_TRACKING_URI is unset: a local SQLite store beside the repo, so
    # the demo needs no server. Relative paths are taken from the repo root.
    default_uri: str = "sqlite:///mlruns.db"
    artifact_dir: str = "mlartifacts"  # where a local store keeps run artefacts
    experiment: str = "prefgen"
    # false (what a stage command's --no-mlflow sets): stages log no MLflow run but still write their metrics files.
    enabled: bool = True
    # true (what a stage command on explicit paths sets with --mlflow): the run is tagged standalone and carries
    # no `prefgen.stage` tag, so lineage and the retrain flow never take it for the pipeline's run of that stage.
    standalone: bool = False
