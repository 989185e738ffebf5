"""The `prefgen` command as a user runs it: standalone on explicit paths."""

import json
import subprocess
import sys

from tests.conftest import SAMPLE_LOG, event, write_jsonl


def prefgen(*args, cwd):
    return subprocess.run([sys.executable, "-m", "prefgen", *args], cwd=cwd, capture_output=True, text=True)


def test_ingest_standalone_prints_counts_as_last_json_line(tmp_path):
    done = prefgen("ingest", "--raw", str(SAMPLE_LOG), "--out", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"read", "valid", "duplicates", "quarantined"} <= set(counts)
    assert counts["read"] == counts["valid"] + counts["quarantined"] > 0
    for name in ("events", "quarantine", "follows.parquet", "memberships.parquet", "images.parquet"):
        assert (tmp_path / "out" / name).exists(), name
    assert not (tmp_path / "mlruns.db").exists()  # no params.yaml here: no MLflow run unless asked


def test_ingest_fatal_error_is_one_clear_line(tmp_path):
    done = prefgen("ingest", "--raw", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: raw log folder not found: {tmp_path / 'missing'}"
    assert not (tmp_path / "out").exists()


def test_forget_on_explicit_tables(tmp_path):
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event(event_id="e1", actor_id="alice"), event(event_id="e2", actor_id="bob")])
    assert prefgen("ingest", "--raw", "raw", "--out", "out", "--no-progress", cwd=tmp_path).returncode == 0
    done = prefgen("forget", "alice", "--tables", "out", "--by", "dpo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["events_removed"] == 1 and record["requested_by"] == "dpo"
    assert "re-runs ingest" in done.stderr


def test_no_mlflow_skips_the_run_but_not_the_metrics_file(tmp_path):
    (tmp_path / "params.yaml").write_text(
        f"ingest: {{raw_dir: {SAMPLE_LOG}, out_dir: tables, metrics: metrics/ingest.json}}\n"
        "split: {tables_dir: tables, out: split.parquet, metrics: metrics/split.json}\n"
        "tracking: {default_uri: 'sqlite:///mlruns.db'}\n")
    for stage in (["ingest", "--no-progress"], ["split"]):
        done = prefgen(*stage, "--no-mlflow", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        written, printed = json.loads((tmp_path / "metrics" / f"{stage[0]}.json").read_text()), json.loads(done.stdout.strip().splitlines()[-1])
        assert written and written.items() <= printed.items()
    assert not (tmp_path / "mlruns.db").exists()
    done = prefgen("split", cwd=tmp_path)  # a params file and no flag: tracked
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mlruns.db").exists()
