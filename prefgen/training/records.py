"""Per-epoch records as they happen: a CSV that DVC plots, and MLflow metrics when a run is active.

Neither needs MLflow or polars installed: the GPU check (benchmarks/gpu_check.py) runs the core without them."""

from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path


def write_curve(path: Path, epochs: list[dict[str, float]]) -> None:
    """All epochs so far, rewritten atomically: a plot read mid-run shows whole epochs only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    columns = list(dict.fromkeys(key for row in epochs for key in row))
    with tmp.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(epochs)
    os.replace(tmp, path)


def log_mlflow(task: str, row: dict[str, float]) -> None:
    """The epoch's metrics as `<task>.<key>` at step = epoch, inside the stage's MLflow run.

    A process that never imported MLflow has no active run, so MLflow is not imported here."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run():
        mlflow.log_metrics({metric_name(f"{task}.{k}"): float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))


def metric_name(key: str) -> str:
    """`key` as MLflow accepts it (letters, digits, _ - . : / and spaces): val_user_HR@10 -> val_user_HR_at_10."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))
