"""Images from a registered bundle, each traceable and reproducible: `prefgen generate` and `prefgen regenerate`.

A generation is one MLflow run (tags: the bundle's name, version and digest); its
manifest is written beside the images and logged to the run, so `prefgen lineage`
finds an image from its file or from its sha256 alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
import torch
from mlflow import MlflowClient
from tqdm import tqdm

from prefgen import tracking
from prefgen.generation.config import GuidanceConfig
from prefgen.hashing import sha256_file
from prefgen.registry import store
from prefgen.registry.bundle import Bundle, BundleError
from prefgen.serving.image_sets import (
    MANIFEST,
    SCORE_TOLERANCE,
    BatchRequest,
    BundleRef,
    Made,
    find_row,
    generate,
    generate_batch,
    regeneration_verdict,
)
from prefgen.tracking_config import TrackingConfig

MANIFEST_ARTIFACT = "manifest"  # run artefact folder holding manifest.parquet


class BundleChanged(store.RegistryError):
    """The bundle version that made an image no longer holds the same bundle: the image cannot be made again."""


@dataclass(frozen=True)
class LoadedBundle:
    ref: BundleRef
    bundle: Bundle


def load_version(client: MlflowClient, name: str, ref: str, cache: Path) -> LoadedBundle:
    """Download a bundle version (alias or number) into `cache`, kept by digest, and verify it.

    The bundle reads its models from there lazily, so `cache` must outlive its use: a lasting folder, or a
    temporary one the caller removes when done."""
    version = store.resolve(client, name, ref)
    digest = version.tags.get("bundle.digest", "")
    target = cache / (digest or f"version-{version.version}")
    if not (target / "bundle").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}", dst_path=str(target / "bundle"))
    data = next((target / "bundle" / "data").iterdir())  # pyfunc's data_path: data/<bundle folder name>
    bundle = Bundle.load(data)
    if digest and bundle.digest != digest:
        raise store.RegistryError(f"{name} version {version.version}: downloaded digest {bundle.digest[:12]} != registered {digest[:12]}")
    return LoadedBundle(BundleRef(name, str(version.version), bundle.digest), bundle)


def run(cfg_tracking: TrackingConfig, root: Path, model: str, ref: str, requests: list[BatchRequest], out_dir: Path,
        sampler: GuidanceConfig | None = None, log=print, device: str = "auto") -> dict[str, Any]:
    """Generate every request's images with bundle `ref` into out_dir, as one MLflow run, on `device`
    (auto, cpu, cuda or cuda:N; auto takes a GPU where torch sees one)."""
    tracking.configure(cfg_tracking, root)
    with tempfile.TemporaryDirectory(prefix="prefgen-bundle-") as cache:
        loaded = load_version(MlflowClient(), model, ref, Path(cache))
        pipe = loaded.bundle.pipeline(sampler, device=device)
        return _generate_run(cfg_tracking, root, loaded, ref, requests, out_dir, pipe, log)


def _generate_run(cfg_tracking: TrackingConfig, root: Path, loaded: LoadedBundle, ref: str, requests: list[BatchRequest],
                  out_dir: Path, pipe, log) -> dict[str, Any]:
    model = loaded.ref.model
    log(f"generating {sum(len(r.seeds) for r in requests)} image(s) with {model} version {loaded.ref.version} "
        f"({loaded.ref.digest[:12]}) on {pipe.device} into {out_dir}")
    tags = {"bundle.name": model, "bundle.version": loaded.ref.version, "bundle.digest": loaded.ref.digest}
    with tracking.stage_run("generate", {"sampler": asdict(pipe.guidance), "bundle": ref}, cfg_tracking, root) as active:
        mlflow.set_tags(tags)
        stamp = {"run_id": active.info.run_id, "prefect_flow_run_id": os.environ.get(tracking.FLOW_RUN_ENV, "")}
        rows = generate(pipe, requests, loaded.ref, out_dir, stamp, progress=lambda it: tqdm(it, desc="batches", unit="batch"))
        mlflow.log_metric("images", len(rows))
        if rows:
            mlflow.log_artifact(str(out_dir / MANIFEST), artifact_path=MANIFEST_ARTIFACT)
    return {"images": len(rows), "out_dir": str(out_dir), "manifest": str(out_dir / MANIFEST), "run_id": active.info.run_id,
            "bundle_version": loaded.ref.version, "bundle_digest": loaded.ref.digest,
            "files": [r["file"] for r in rows]}


IMAGE_STAGES = ("generate", "nightly")  # the MLflow runs that make images and log their manifest


def _manifests_in_runs(client: MlflowClient) -> list[tuple[str, pl.DataFrame]]:
    runs = [r for stage in IMAGE_STAGES for r in mlflow.search_runs(
        search_all_experiments=True, output_format="list", order_by=["attributes.start_time DESC"],
        filter_string=f"tags.`prefgen.stage` = '{stage}' AND attributes.status = 'FINISHED' AND metrics.images > 0")]
    found = []
    for r in runs:  # a run that made images logged its manifest
        path = mlflow.artifacts.download_artifacts(run_id=r.info.run_id, artifact_path=f"{MANIFEST_ARTIFACT}/{MANIFEST}")
        found.append((f"runs:/{r.info.run_id}/{MANIFEST_ARTIFACT}/{MANIFEST}", pl.read_parquet(path)))
    return found


def _looked_up_by(path: Path, target: str) -> list[str]:
    """The sha256 (prefixes) to find an image's row by: a file's bytes, then its name (images are saved as <sha256>.png),
    so a file edited since it was made is still found, and then told apart; else the sha256 given."""
    if not path.is_file():
        return [target.lower()]
    named = [path.stem.lower()] if re.fullmatch(r"[0-9a-f]{64}", path.stem.lower()) else []
    return [sha256_file(path)] + named


def locate(target: str, client: MlflowClient, manifest: Path | None = None) -> tuple[dict[str, Any], str]:
    """(manifest row, where it was found) of an image given by file path or (a prefix of) its sha256."""
    path = Path(target)
    shas = _looked_up_by(path, target)
    candidates = [manifest] if manifest else ([path.parent.parent / MANIFEST, path.parent / MANIFEST] if path.is_file() else [])
    nearby = [(str(c), pl.read_parquet(c)) for c in candidates if c and c.is_file()]
    for frames in (lambda: nearby, lambda: _manifests_in_runs(client)):  # the runs' manifests only when needed
        for where, frame in frames():
            row = next(filter(None, (find_row(frame, sha) for sha in shas)), None)
            if row:
                return row, where
    raise store.RegistryError(f"no manifest row for image {shas[0][:16]} (looked in {[str(c) for c in candidates if c]} "
                              "and every generation run's manifest)")


def _load_maker(client: MlflowClient, row: dict[str, Any], cache: Path) -> LoadedBundle:
    """The bundle version that made the image, refused as BundleChanged when it no longer holds that bundle."""
    made_by = f"{row['bundle_model']} version {row['bundle_version']}"
    try:
        loaded = load_version(client, row["bundle_model"], str(row["bundle_version"]), cache)
    except (store.RegistryError, BundleError) as err:
        raise BundleChanged(f"{made_by}, which made the image, changed since: {err}") from err
    if loaded.ref.digest != row["bundle_digest"]:
        raise BundleChanged(f"{made_by} now has digest {loaded.ref.digest[:12]}, the image was made by "
                            f"{row['bundle_digest'][:12]}: the same version no longer holds the same models")
    return loaded


def regenerate(cfg_tracking: TrackingConfig, root: Path, target: str, manifest: Path | None = None,
               out: Path | None = None, device: str | None = None, tolerance: float = SCORE_TOLERANCE) -> dict[str, Any]:
    """Make the image again from its manifest row and say what that can promise (`regeneration_verdict`): the same
    sha256 where it is made as it was (device class, dtype, torch version, machine), else scores within `tolerance`.
    `device` defaults to the device class the image was made on, where this machine has one; `out` keeps the file."""
    tracking.configure(cfg_tracking, root)
    client = MlflowClient()
    row, where = locate(target, client, manifest)
    made = Made.of_row(row)
    if made.threads is not None:
        torch.set_num_threads(made.threads)  # the split it was made with: the same bytes need the same rounding
    request = BatchRequest(row["segment"], row["prompt"], tuple(int(s) for s in row["batch_seeds"]))
    with tempfile.TemporaryDirectory(prefix="prefgen-bundle-") as cache:
        loaded = _load_maker(client, row, Path(cache))
        pipe = loaded.bundle.pipeline(GuidanceConfig(**json.loads(row["sampler"])), device=device or _device_like(made))
        data, again = generate_batch(pipe, request, loaded.ref)[int(row["batch_index"])]
        now = Made.by(pipe)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    file_sha = sha256_file(Path(target)) if Path(target).is_file() else row["image_sha256"]
    return {"image_sha256": row["image_sha256"], "regenerated_sha256": again["image_sha256"], "manifest": where,
            "file_sha256": file_sha, "file_matches_manifest": file_sha == row["image_sha256"],
            "same_kind_of_machine": made.machine == now.machine, "made_on": made.machine, "now_on": now.machine,
            **regeneration_verdict(row, again, made, now, tolerance)}


def _device_like(made: Made) -> str:
    """The device class an image was made on where this machine has it (the only place its bytes can come back),
    else auto."""
    return made.device if made.device == "cpu" or torch.cuda.is_available() else "auto"
