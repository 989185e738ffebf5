"""What still holds a forgotten individual after `prefgen forget`: bundle tags and `forget --report`.

A bundle version holds an individual when its graph model's segments table lists
`ind:<id>`: the individual was in the tables it was trained on. `forget` tags every
such version registered before the request with the id's sha256 (tag
`prefgen.forgotten`, a JSON list), and `promote` / `rollback` refuse a tagged version.
The report names the individual only by that sha256; what it lists, and what removes
each kind of leftover, is in docs/DATA.md ("Deletion requests").
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from prefgen import tracking
from prefgen.config import section_config, tracking_config
from prefgen.data import contract as c
from prefgen.data.forget import mentions, read_requests, subject_hash
from prefgen.paths import Paths
from prefgen.registry.store import FORGOTTEN_TAG, forgotten_subjects
from prefgen.serving.gallery import segment_key
from prefgen.serving.image_sets import MANIFEST
from prefgen.tracking_config import TrackingConfig

SEGMENTS = "models/graph/segments.parquet"  # inside a bundle folder


def registry_client(cfg: TrackingConfig, root: Path) -> MlflowClient | None:
    """A client on the tracking store, or None where the local store was never created (no registry to tag)."""
    uri = tracking.tracking_uri(cfg, root)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return None
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    found = client.search_model_versions(f"name = '{name}'")
    return [client.get_model_version(name, v.version) for v in sorted(found, key=lambda v: int(v.version))]


def segment_ids(name: str, version: str) -> set[str]:
    """The segment ids of a registered bundle, downloading only its segments table."""
    uri = f"models:/{name}/{version}/data"
    with tempfile.TemporaryDirectory(prefix="prefgen-segments-") as tmp:
        ids: set[str] = set()
        for folder in mlflow.artifacts.list_artifacts(artifact_uri=uri):
            path = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{Path(folder.path).name}/{SEGMENTS}", dst_path=tmp)
            ids |= set(pl.read_parquet(path)["segment_id"].to_list())
        return ids


def holding_versions(client: MlflowClient, name: str, individual_id: str, before: datetime | None) -> list[ModelVersion]:
    """Versions registered before `before` (None: any) whose segments list the individual."""
    cutoff = before.timestamp() * 1000 if before else float("inf")
    return [v for v in _versions(client, name)
            if v.creation_timestamp < cutoff and f"ind:{individual_id}" in segment_ids(name, str(v.version))]


def tag_holding_versions(client: MlflowClient, name: str, individual_id: str, before: datetime) -> list[str]:
    """Add the id's sha256 to `prefgen.forgotten` on every version holding the individual; their numbers."""
    subject, tagged = subject_hash(individual_id), []
    for version in holding_versions(client, name, individual_id, before):
        subjects = forgotten_subjects(version)
        if subject not in subjects:
            client.set_model_version_tag(name, version.version, FORGOTTEN_TAG, json.dumps(sorted(subjects + [subject])))
        tagged.append(str(version.version))
    return tagged


def _night_leftovers(nights_dir: Path, individual_id: str) -> list[dict[str, Any]]:
    """Earlier nights whose manifest has images of the individual's segment, with their gallery page."""
    segment, found = f"ind:{individual_id}", []
    for manifest in sorted(nights_dir.glob(f"*/*/{MANIFEST}")):
        rows = pl.read_parquet(manifest).filter(pl.col("segment") == segment)
        if rows.height:
            page = manifest.parent / "gallery" / "segments" / f"{segment_key(segment)}.html"
            runs = sorted(set(rows["generation_run_id"].to_list())) if "generation_run_id" in rows.columns else []
            found.append({"night": str(manifest.parent), "images": rows.height, "gallery_page": str(page) if page.is_file() else "",
                          "mlflow_runs": runs})
    return found


def _dvc_cache(root: Path, requested_at: datetime | None) -> dict[str, Any]:
    cache = root / ".dvc" / "cache"
    files = [p for p in cache.rglob("*") if p.is_file()] if cache.is_dir() else []
    cutoff = requested_at.timestamp() if requested_at else float("inf")
    return {"path": str(cache), "objects_from_before_the_request": sum(p.stat().st_mtime < cutoff for p in files)}


def report(tables_dir: Path, individual_id: str, root: Path, nights_dir: Path | None, client: MlflowClient | None,
           model_name: str) -> dict[str, Any]:
    """What still mentions the individual, keyed by the id's sha256 (the id itself is never in the result)."""
    subject = subject_hash(individual_id)
    log = read_requests(tables_dir).filter(pl.col("subject_sha256") == subject)
    requested_at = log["requested_at"][0] if log.height else None
    bundles = []
    if client is not None:
        for version in holding_versions(client, model_name, individual_id, requested_at):
            bundles.append({"version": str(version.version), "aliases": list(version.aliases),
                            "tagged": subject in forgotten_subjects(version), "register_run": version.run_id or ""})
    nights = _night_leftovers(nights_dir, individual_id) if nights_dir else []
    return {"subject_sha256": subject, "requested_at": requested_at.isoformat() if requested_at else None,
            "tables": mentions(tables_dir, individual_id) if (tables_dir / c.SOURCES_FILE).is_file() else {},
            "bundle_versions": bundles, "mlflow_artifacts": {"bundle_models": [b["version"] for b in bundles],
                                                             "nightly_runs": sorted({r for n in nights for r in n["mlflow_runs"]})},
            "nights": nights, "dvc_cache": _dvc_cache(root, requested_at)}


def _registry(params: dict[str, Any] | None, root: Path) -> tuple[MlflowClient | None, str]:
    """(client, registered model name) from params.yaml; no client without params or a store."""
    if params is None:
        return None, ""
    return registry_client(tracking_config(params), root), section_config(params, "registry").model_name


def tag_from_params(params: dict[str, Any] | None, root: Path, individual_id: str) -> list[str]:
    """After a request: tag the registered versions holding the individual; their numbers."""
    client, name = _registry(params, root)
    return tag_holding_versions(client, name, individual_id, datetime.now(UTC)) if client else []


def report_from_params(params: dict[str, Any] | None, root: Path, tables_dir: Path, individual_id: str) -> dict[str, Any]:
    """`forget --report`: the registry and nights of params.yaml (neither without it)."""
    client, name = _registry(params, root)
    nights = Paths.from_params(params).rooted(root).nightly if params else None
    return report(tables_dir, individual_id, root, nights, client, name)
