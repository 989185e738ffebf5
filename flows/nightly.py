"""Prefect flow `nightly`: the champion bundle's image sets for every segment of a campaign, and their gallery.

Thin by design: the plan, the idempotent units and the gallery live in prefgen/serving;
this flow resolves the bundle once, fans the segments out (Dask by
default), and records the night (MLflow run, Prefect artifact). Tasks get paths and keys,
never data.

    python -m flows.nightly                         # params.yaml's campaign, tonight's folder
    python -m flows.nightly . --campaign campaigns/x.yaml --night 2026-11-28
    python -m flows.nightly . --serve               # development: a served deployment at 02:00
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.schedules import Cron
from prefect.task_runners import ThreadPoolTaskRunner

from flows import params_or_exit
from prefgen import tracking
from prefgen.atomic import write_atomic
from prefgen.config import section_config, tracking_config
from prefgen.data.forget import forgotten_hashes
from prefgen.params import ConfigError, load_params
from prefgen.paths import Paths
from prefgen.registry.generate import MANIFEST_ARTIFACT, LoadedBundle, load_version
from prefgen.serving import units as night_units
from prefgen.serving.config import Campaign, DaskConfig, NightlyConfig, check_night, load_campaign
from prefgen.serving.devices import device_for_worker, night_devices, resolve_device
from prefgen.serving.gallery import write_gallery
from prefgen.serving.image_sets import BundleRef, sampler_json
from prefgen.serving.plan import Plan, Unit, plan
from prefgen.tracking_config import TrackingConfig

# As in prefect.yaml's nightly deployment; the slug names the schedule so redeploys update it rather than add one.
CRON, TIMEZONE, SLUG = "0 2 * * *", "Europe/Berlin", "nightly-0200"


def task_runner(cfg: DaskConfig):
    """Dask for the fan-out: a scheduler from params, else a LocalCluster of worker processes; 0 workers: in process."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # the workers' start/stop chatter hides the night's log
    if cfg.address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=cfg.address)
    if cfg.n_workers == 0:
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": cfg.n_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def _worker_name() -> object:
    """The Dask worker this task runs on (a LocalCluster numbers them 0, 1, ...); None outside Dask."""
    try:
        from distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):  # ValueError: not in a worker (the in-process runner)
        return None


@task(retries=1, retry_delay_seconds=10, task_run_name="segment {segment}")
def generate_segment(segment: str, units: list[dict[str, Any]], bundle: dict[str, str], night: str,
                     stamp: dict[str, str], threads: int, devices: list[str]) -> dict[str, Any]:
    """One segment's missing units (on whichever worker Dask picks, on that worker's device); returns counts."""
    logger = get_run_logger()
    device = resolve_device(device_for_worker(devices, _worker_name()))
    pipe = night_units.cached_pipeline(bundle["folder"], bundle["digest"], bundle["sampler"], device)
    ref = BundleRef(bundle["model"], bundle["version"], bundle["digest"])
    todo = [Unit(u["segment"], u["prompt"], tuple(u["seeds"]), u["key"]) for u in units]
    return asdict(night_units.run_segment(pipe, todo, ref, Path(night), stamp, threads, log=logger.info))


@flow(name="nightly-fan-out")
def fan_out(work: dict[str, list[dict[str, Any]]], bundle: dict[str, str], night: str, stamp: dict[str, str],
            threads: int, devices: list[str]) -> list[dict[str, Any]]:
    """One task per segment on the flow's task runner (set by `nightly` from params); `devices`: one per worker."""
    futures = [generate_segment.submit(segment, units, bundle, night, stamp, threads, devices) for segment, units in work.items()]
    return [f.result() for f in futures]


def _work(the_plan: Plan) -> dict[str, list[dict[str, Any]]]:
    work: dict[str, list[dict[str, Any]]] = {}
    for unit in the_plan.units:
        work.setdefault(unit.segment, []).append(asdict(unit))
    return work


MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>])")


def markdown_text(value: object) -> str:
    """`value` as literal text on one Markdown line (a table cell too): ids and names come from users' files,
    so HTML is escaped and every Markdown punctuation mark backslash-escaped."""
    return MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(" ".join(str(value).split()), quote=True))


def _publish(night_dir: Path, gallery, summary: dict[str, Any]) -> None:
    """The night's gallery as a Prefect artifact: one row per segment, with its page."""
    md = markdown_text
    rows = "\n".join(f"| {md(segment)} | {md(page.relative_to(night_dir))} |" for segment, page in gallery.pages.items())
    create_markdown_artifact(key="nightly-gallery", description=f"nightly {summary['campaign']} {summary['night']}",
                             markdown=f"# {md(summary['campaign'])} {md(summary['night'])}\n\nbundle {md(summary['bundle'])}, "
                                      f"{summary['images']} images, {len(summary['rejected'])} rejected\n\n"
                                      f"gallery: {md(gallery.index)}\n\n| segment | page |\n|---|---|\n{rows}\n")


def _record(night_dir: Path, summary: dict[str, Any], gallery) -> None:
    mlflow.log_metrics({"images": summary["images"], "units": summary["units"], "units_made": summary["units_made"],
                        "units_skipped": summary["units_skipped"], "rejected": len(summary["rejected"])})
    mlflow.log_artifact(str(night_dir / "manifest.parquet"), artifact_path=MANIFEST_ARTIFACT)
    mlflow.log_artifact(str(night_dir / "rejected.json"))
    mlflow.log_artifacts(str(gallery.index.parent), artifact_path="gallery")


@dataclass(frozen=True)
class Night:
    """What one night works from: the settings, the resolved bundle, the plan and its folder."""

    repo: Path
    cfg: NightlyConfig
    track: TrackingConfig
    spec: Campaign
    loaded: LoadedBundle
    sampler: str
    plan: Plan
    folder: Path
    devices: list[str]  # one per worker (night_devices)

    @property
    def bundle(self) -> dict[str, str]:
        """What a segment task needs to build the sampler (paths and digests, not models)."""
        ref = self.loaded.ref
        return {"folder": str(self.loaded.bundle.folder), "digest": ref.digest, "model": ref.model,
                "version": ref.version, "sampler": self.sampler}


def _prepare(root: str, campaign: str | None, night: str | None) -> Night:
    """Read params and the campaign, resolve the bundle once, plan the units."""
    repo = Path(root).resolve()
    params = load_params(repo / "params.yaml")
    cfg, track, paths = section_config(params, "nightly"), tracking_config(params), Paths.from_params(params).rooted(repo)
    devices = night_devices(cfg)  # before anything is downloaded: cuda asked for where there is none fails here
    spec = load_campaign(repo / (campaign or cfg.campaign))
    tracking.configure(track, repo)
    loaded = load_version(mlflow.MlflowClient(), section_config(params, "registry").model_name, cfg.bundle,
                          cache=paths.nightly / ".bundles")
    sampler = sampler_json(section_config(params, "sampler"))
    units = plan(spec, pl.read_parquet(loaded.bundle.model_dir("graph") / "segments.parquet"), repo, loaded.ref.digest, sampler,
                 frozenset(forgotten_hashes(paths.tables)))  # the champion may predate a request
    return Night(repo, cfg, track, spec, loaded, sampler, units, paths.nightly / spec.name / (night or date.today().isoformat()),
                 devices)


def _announce(night: Night, logger) -> None:
    """Log the plan and what it refused (also kept as rejected.json); sweep what a killed run left."""
    ref, units = night.loaded.ref, night.plan
    logger.info("bundle %s version %s (%s): %d segments, %d units into %s", ref.model, ref.version, ref.digest[:12],
                len(units.segments), len(units.units), night.folder)
    for bad in units.rejected:
        logger.warning("rejected %s %r: %s", bad.what, bad.value, bad.reason)
    write_atomic(night.folder / "rejected.json", json.dumps([asdict(r) for r in units.rejected], indent=2).encode())
    swept = night_units.sweep_temporaries(night.folder)
    if swept:
        logger.info("removed %d temporary file(s) left by an interrupted run", swept)


def _summary(night: Night, frame: pl.DataFrame, gallery, run_id: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    ref = night.loaded.ref
    return {"campaign": night.spec.name, "night": night.folder.name, "out_dir": str(night.folder),
            "manifest": str(night.folder / "manifest.parquet"), "gallery": str(gallery.index),
            "bundle": f"{ref.model}/{ref.version}", "bundle_digest": ref.digest, "run_id": run_id, "images": frame.height,
            "units": len(night.plan.units), "units_made": sum(r["made_units"] for r in results),
            "units_skipped": sum(r["skipped_units"] for r in results), "images_made": sum(r["images"] for r in results),
            "rejected": [asdict(r) for r in night.plan.rejected]}


@flow(name="nightly", log_prints=True)
def nightly(root: str = ".", campaign: str | None = None, night: str | None = None) -> dict[str, Any]:
    """The campaign's image sets from the bundle `params.nightly.bundle` resolves to (once, at the start)."""
    logger = get_run_logger()
    if night is not None:
        check_night(night)  # before anything is read or written: it names a folder
    job = _prepare(root, campaign, night)
    _announce(job, logger)
    ref, name, devices = job.loaded.ref, job.folder.name, job.devices
    logger.info("worker devices: %s", ", ".join(devices))
    with tracking.stage_run("nightly", {"campaign": asdict(job.spec), "night": name, "bundle": job.cfg.bundle,
                                        "dask": asdict(job.cfg.dask), "threads": job.cfg.threads, "device": job.cfg.device,
                                        "worker_devices": devices}, job.track, job.repo,
                            flow_run_id=str(flow_run.get_id() or "")) as run:
        mlflow.set_tags({"bundle.name": ref.model, "bundle.version": ref.version, "bundle.digest": ref.digest,
                         "campaign": job.spec.name, "night": name})
        stamp = {"generation_run_id": run.info.run_id, "prefect_flow_run_id": str(flow_run.get_id() or ""),
                 "campaign": job.spec.name, "night": name}
        results = fan_out.with_options(task_runner=task_runner(job.cfg.dask))(_work(job.plan), job.bundle, str(job.folder),
                                                                              stamp, job.cfg.threads, devices)
        manifest, missing = night_units.finalize(job.folder, job.plan.units)
        if missing:
            raise RuntimeError(f"{len(missing)} unit(s) not done (e.g. segment {missing[0].segment!r}); rerun to make them")
        frame = pl.read_parquet(manifest)
        gallery = write_gallery(frame, job.folder, job.folder / "gallery", f"{job.spec.name} {name}")
        summary = _summary(job, frame, gallery, run.info.run_id, results)
        _record(job.folder, summary, gallery)
    _publish(job.folder, gallery, summary)
    logger.info("night done: %d units made, %d already there; gallery %s", summary["units_made"], summary["units_skipped"],
                summary["gallery"])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".")
    parser.add_argument("--campaign", help="campaign spec (default: params.yaml nightly.campaign)")
    parser.add_argument("--night", help="the night's folder name: a date YYYY-MM-DD (default: today) or a slug; a rerun resumes it")
    parser.add_argument("--serve", action="store_true", help="serve a deployment on this process (cron 02:00)")
    args = parser.parse_args()
    if args.night is not None:
        try:
            check_night(args.night)
        except ConfigError as err:
            parser.error(str(err))  # one line and exit 2, like the prefgen command
    params_or_exit(args.root)
    if args.serve:
        nightly.serve(name="nightly-dev", parameters={"root": str(Path(args.root).resolve()), "campaign": args.campaign},
                      schedule=Cron(CRON, timezone=TIMEZONE, slug=SLUG))
        return
    report(nightly(args.root, args.campaign, args.night))


def report(summary: dict[str, Any]) -> None:
    print(f"\nnightly {summary['campaign']} {summary['night']}: {summary['images']} images from {summary['bundle']} "
          f"({summary['units_made']} units made, {summary['units_skipped']} already there, {len(summary['rejected'])} rejected)")
    for bad in summary["rejected"]:
        print(f"  rejected {bad['what']} {bad['value']!r}: {bad['reason']}")
    print(f"manifest: {summary['manifest']}")
    print(f"gallery:  {summary['gallery']}")


if __name__ == "__main__":
    main()
