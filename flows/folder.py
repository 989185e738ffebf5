"""Prefect flow `retrain-folder`: a pipeline folder's retrain (`prefgen new`, prefgen/pipeline_folder/).

The folder's code fingerprint first brought up to the installed prefgen (so an upgrade reruns the stages whose code
changed), then the retrain flow as in the project, then the default campaign's segments from the new tables.

    prefgen retrain DIR                  # or, from DIR: python -m flows.folder
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows import params_or_exit, retrain as retrain_flow
from prefgen.params import load_params
from prefgen.paths import Paths
from prefgen.pipeline_folder.campaign import CampaignSettings, write_segments
from prefgen.pipeline_folder.create import refresh_code


@task
def refresh_fingerprint(root: str) -> list[str]:
    """params.yaml's `code:` section from the installed prefgen; the stages whose code changed."""
    changed = refresh_code(Path(root))
    get_run_logger().info("code changed since the last retrain for: %s", ", ".join(changed) or "no stage")
    return changed


@task
def campaign_segments(root: str) -> int:
    """The default campaign's segments table from the tables this retrain left."""
    repo = Path(root)
    params = load_params(repo / "params.yaml")
    count = write_segments(repo, Paths.from_params(params).rooted(repo).tables, CampaignSettings())
    get_run_logger().info("default campaign: %d segments (the largest groups, the most active individuals)", count)
    return count


@flow(name="retrain-folder", log_prints=True)
def retrain_folder(root: str = ".") -> list[dict[str, Any]]:
    refresh_fingerprint(root)
    results = retrain_flow.retrain(root)
    campaign_segments(root)
    return results


def main(root: str = ".") -> None:
    params_or_exit(root)
    retrain_flow.report(retrain_folder(root), Path(root).resolve())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
