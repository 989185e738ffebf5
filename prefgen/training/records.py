"""Per-epoch records as they happen: a CSV that DVC plots, and MLflow metrics when a run is active.

Neither needs MLflow or polars installed: the GPU check (benchmarks/gpu_check.py) runs the core without them."""

from __future__ import annotations

import csv
import os
import re
import sys
import time
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


MLFLOW_BATCH = 1000  # MLflow's most metrics in one log_batch call


def log_mlflow(task: str, rows: list[dict[str, float]]) -> None:
    """The epochs' metrics as `<task>.<key>` at step = epoch, inside the stage's MLflow run, in as few calls as it takes.

    A process that never imported MLflow has no active run, so MLflow is not imported here."""
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    if run is None or not rows:
        return
    now = int(time.time() * 1000)
    metrics = [mlflow.entities.Metric(metric_name(f"{task}.{k}"), float(v), now, int(row["epoch"]))
               for row in rows for k, v in row.items() if k != "epoch"]
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), MLFLOW_BATCH):
        client.log_batch(run.info.run_id, metrics=metrics[start:start + MLFLOW_BATCH])


class MlflowEpochs:
    """Epoch rows sent to the active MLflow run at most every `every_s` seconds and at `flush`: a run of a thousand
    millisecond epochs (W) spent longer logging them one call each than training."""

    def __init__(self, task: str, every_s: float = 2.0):
        self.task, self.every_s, self.rows, self.sent = task, every_s, [], time.monotonic()

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if time.monotonic() - self.sent >= self.every_s:
            self.flush()

    def flush(self) -> None:
        log_mlflow(self.task, self.rows)
        self.rows, self.sent = [], time.monotonic()


def metric_name(key: str) -> str:
    """`key` as MLflow accepts it (letters, digits, _ - . : / and spaces): val_user_HR@10 -> val_user_HR_at_10."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))
