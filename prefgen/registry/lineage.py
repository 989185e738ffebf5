"""`prefgen lineage PATH_OR_SHA`: which data, code and models made this image?

    image -> generation run -> bundle version -> training runs (params, git commit,
    dvc.lock digests) -> raw log files

Every link is read back from MLflow (runs, model version tags, the register run's
lineage/lineage.json), not from the local checkout, so the answer is the same on any
machine pointed at the same tracking store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from prefgen import tracking
from prefgen.registry.generate import locate
from prefgen.tracking_config import TrackingConfig


def _run_summary(client: MlflowClient, run_id: str) -> dict[str, Any]:
    if not run_id:
        return {}
    run = client.get_run(run_id)
    tags = run.data.tags
    return {"run_id": run_id, "stage": tags.get("prefgen.stage", ""), "started": run.info.start_time,
            "user": tags.get("mlflow.user", ""), "git.commit": tags.get("git.commit", ""), "git.dirty": tags.get("git.dirty", ""),
            "prefect.flow_run_id": tags.get("prefect.flow_run_id", ""), "params": dict(run.data.params)}


def chain(cfg_tracking: TrackingConfig, root: Path, target: str, manifest: Path | None = None) -> dict[str, Any]:
    """The lineage of one image as a nested dict (what `--json` prints)."""
    tracking.configure(cfg_tracking, root)
    client = MlflowClient()
    row, where = locate(target, client, manifest)
    version = client.get_model_version(row["bundle_model"], str(row["bundle_version"]))
    register_run = version.tags.get("register.run_id", "")
    lineage = mlflow.artifacts.load_dict(f"runs:/{register_run}/lineage/lineage.json") if register_run else {}
    lock = lineage.get("dvc_lock", {})
    training = {}
    for part, found in lineage.get("training_runs", {}).items():
        stage = found.get("stage", "")
        training[part] = found | {"run": _run_summary(client, found.get("run_id", "")),
                                  "dvc.lock": {k: lock.get(stage, {}).get(k, []) for k in ("deps", "outs")}}
    return {
        "image": {"sha256": row["image_sha256"], "file": row.get("file"), "manifest": where, "segment": row["segment"],
                  "prompt": row["prompt"], "seed": row["seed"], "sampler": row["sampler"], "machine": row.get("machine")},
        "generation_run": _run_summary(client, row.get("generation_run_id", "")),
        "bundle": {"model": version.name, "version": version.version, "aliases": list(version.aliases),
                   "digest": version.tags.get("bundle.digest", ""), "digest_matches_image": version.tags.get("bundle.digest") == row["bundle_digest"],
                   "gate": version.tags.get("gate.decision", ""), "gate_reasons": version.tags.get("gate.reasons", ""),
                   "register_run": _run_summary(client, register_run), "git": lineage.get("git", {}),
                   "prefect.flow_run_id": lineage.get("prefect.flow_run_id", "")},
        "training_runs": training,
        "evaluation_runs": lineage.get("evaluation_runs", {}),
        "raw_logs": lineage.get("raw_logs", {}) | {"dvc.lock (ingest deps)": lock.get("ingest", {}).get("deps", [])},
    }


def _lock_line(entries: list[dict[str, Any]]) -> str:
    return ", ".join(f"{e['path']} {str(e.get('md5') or e.get('hash') or '')[:12]}" for e in entries) or "(not in dvc.lock)"


def format_chain(info: dict[str, Any], max_raw: int = 5) -> str:
    """The chain as indented text, image first, raw logs last."""
    image, gen, bundle = info["image"], info["generation_run"], info["bundle"]
    lines = [f"image          {image['sha256']}",
             f"  file         {image['file']}   (manifest {image['manifest']})",
             f"  made from    segment {image['segment']!r}, prompt {image['prompt']!r}, seed {image['seed']}",
             f"  sampler      {image['sampler']}",
             f"  machine      {image['machine']}",
             (f"generation run {gen.get('run_id', '?')}  by {gen.get('user', '?')}  git {gen.get('git.commit', '?')[:12]}"
              + (f"  prefect flow run {gen['prefect.flow_run_id']}" if gen.get("prefect.flow_run_id") else "")),
             (f"bundle         {bundle['model']} version {bundle['version']}  aliases {bundle['aliases'] or '[]'}  "
              f"digest {bundle['digest'][:12]} ({'matches' if bundle['digest_matches_image'] else 'DOES NOT MATCH'} the image's)"),
             f"  gate         {bundle['gate'] or 'not gated'}: {bundle['gate_reasons'].splitlines()[0] if bundle['gate_reasons'] else ''}",
             (f"  registered   run {bundle['register_run'].get('run_id', '?')}  git {bundle['git'].get('git.commit', '?')[:12]}"
              f" (dirty: {bundle['git'].get('git.dirty', '?')})"),
             "training runs"]
    for part, found in info["training_runs"].items():
        run = found.get("run", {})
        lines.append(f"  {part:<10} {found.get('stage', ''):<16} run {found.get('run_id') or '?'}  ({found.get('matched_by')})  "
                     f"git {run.get('git.commit', '?')[:12]}  {len(run.get('params', {}))} params")
        lines.append(f"  {'':<10} deps  {_lock_line(found['dvc.lock']['deps'])}")
        lines.append(f"  {'':<10} outs  {_lock_line(found['dvc.lock']['outs'])}")
    raw = info["raw_logs"]
    files = raw.get("files", [])
    lines.append(f"raw logs       {raw.get('dir', '?')}: {len(files)} file(s); dvc.lock {_lock_line(raw['dvc.lock (ingest deps)'])}")
    lines += [f"  {f['source']}  sha256 {f['sha256'][:16]}  {f['bytes']} bytes" for f in files[:max_raw]]
    if len(files) > max_raw:
        lines.append(f"  ... and {len(files) - max_raw} more (--json lists all)")
    return "\n".join(lines)
