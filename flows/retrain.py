"""Prefect flow `retrain`: run the DVC pipeline one stage at a time, in DAG order.

Thin by design: DVC decides what is stale and how each stage is built; this flow
adds scheduling, retries with backoff, logs and a run record. Each task returns
paths and digests (from dvc.lock), never data.

    python -m flows.retrain                      # no server: Prefect starts a temporary one
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.retrain   # against `prefect server start`
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger, task
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from flows import params_or_exit
from prefgen import pipeline, tracking
from prefgen.config import section_config, tracking_config
from prefgen.params import load_params
from prefgen.registry import register
from prefgen.rescore import rescore_bundle


def retry_if_transient(stage_task: Any, task_run: Any, state: State) -> bool:
    """Retry a stage only when its failure may not repeat (pipeline.StageError.transient): a stage's own error
    (a bug, bad data, a bad setting) fails the same way again, and each retry would cost minutes of backoff."""
    error = state.data
    return not isinstance(error, pipeline.StageError) or error.transient


@task(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.5,
      retry_condition_fn=retry_if_transient)
def dvc_stage(stage: str, root: str, stale: bool) -> dict[str, Any]:
    """Reproduce one stage when the flow found it stale; return its dvc.lock digests and whether they changed."""
    logger = get_run_logger()
    repo = Path(root)
    before = pipeline.lock_entry(repo, stage)
    if not stale:
        logger.info("stage %s is up to date: skipped", stage)
        return {"stage": stage, "ran": False, "changed": False, "lock": before}
    run_id = str(flow_run.get_id() or "")
    logger.info("stage %s is stale: running dvc repro --single-item %s", stage, stage)
    pipeline.repro(repo, stage, flow_run_id=run_id, on_line=lambda line: logger.info("%s: %s", stage, line))
    lock = pipeline.lock_entry(repo, stage)
    tagged = tracking.tag_with_lock(tracking_config(load_params(repo / "params.yaml")), repo, stage, run_id, lock)
    logger.info("stage %s done; lineage tags on MLflow run(s) %s", stage, ", ".join(tagged) or "(none logged)")
    return {"stage": stage, "ran": True, "changed": lock != before, "lock": lock, "mlflow_runs": tagged}


@task
def register_bundle(root: str, fresh: bool = False) -> dict[str, Any]:
    """Bundle the models, register them unless identical to a version, and let the champion gate decide.
    `fresh`: the caller has just brought every stage up to date (no second `dvc status` needed)."""
    logger = get_run_logger()
    repo = Path(root)
    params = load_params(repo / "params.yaml")
    result = register.run(section_config(params, "registry"), params, repo, log=logger.info,
                          flow_run_id=str(flow_run.get_id() or ""), checked_fresh=fresh, rescore=rescore_bundle)
    if result.get("gate") == "refused":
        logger.warning("champion gate refused version %s (now challenger): %s", result["version"], "; ".join(result["reasons"]))
    return result


@flow(name="retrain", log_prints=True)
def retrain(root: str = ".") -> list[dict[str, Any]]:
    """Every stage of dvc.yaml in DAG order, one at a time (DVC holds a repo lock), then the bundle's registration."""
    repo = Path(root).resolve()
    order, upstream = pipeline.stage_order(repo), pipeline.upstream(repo)
    # One `dvc status` for the whole pipeline, not one per stage (each costs a DVC start-up): a stage
    # runs when it was stale then, or when a stage it reads from changed its outputs since.
    stale, changed = set(pipeline.stale_stages(repo)), set()
    get_run_logger().info("stages in order: %s; stale now: %s", " -> ".join(order), ", ".join(sorted(stale)) or "none")
    results = []
    for stage in order:
        result = dvc_stage.with_options(name=f"dvc-{stage}")(stage, str(repo), stage in stale or bool(upstream[stage] & changed))
        changed |= {stage} if result["changed"] else set()
        results.append(result)
    bundle = register_bundle(str(repo), fresh=True)
    results.append({"stage": "register", "ran": bundle["created"]} | bundle)
    return results


def report(summary: list[dict[str, Any]], repo: Path) -> None:
    """What ran, the bundle's fate, and where the results are."""
    ran = [r["stage"] for r in summary if r["ran"]]
    bundle = summary[-1]
    if bundle.get("created"):
        print(f"\nregistered bundle version {bundle['version']}: champion gate {bundle['gate']} ({'; '.join(bundle['reasons'])})")
    else:
        print(f"\nbundle unchanged: still version {bundle['version']} {bundle.get('aliases') or ''}")
    uri = tracking.tracking_uri(tracking_config(load_params(repo / "params.yaml")), repo)
    print(f"\nretrain finished: ran {', '.join(ran) or 'no stage (all up to date)'}")
    print("results:")
    print("\n".join(pipeline.outputs_summary(repo)))
    print(f"  MLflow runs: {uri}   (browse: mlflow ui --backend-store-uri {uri})")
    print("  metrics:     dvc metrics show")


def main(root: str = ".") -> None:
    params_or_exit(root)
    report(retrain(root), Path(root).resolve())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
