"""The `prefgen` command as a user runs it: standalone on explicit paths."""

import json
import subprocess
import sys

import mlflow
import yaml

from tests.conftest import ROOT, SAMPLE_LOG, event, write_jsonl


def prefgen(*args, cwd):
    return subprocess.run([sys.executable, "-m", "prefgen", *args], cwd=cwd, capture_output=True, text=True)


def test_ingest_standalone_prints_counts_as_last_json_line(tmp_path):
    done = prefgen("ingest", "--raw", str(SAMPLE_LOG), "--tables", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"read", "valid", "duplicates", "quarantined"} <= set(counts)
    assert counts["read"] == counts["valid"] + counts["quarantined"] > 0
    for name in ("events", "quarantine", "follows.parquet", "memberships.parquet", "images.parquet"):
        assert (tmp_path / "out" / name).exists(), name
    assert not (tmp_path / "mlruns.db").exists()  # no params.yaml here: no MLflow run unless asked


def test_ingest_fatal_error_is_one_clear_line(tmp_path):
    done = prefgen("ingest", "--raw", str(tmp_path / "missing"), "--tables", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: raw log folder not found: {tmp_path / 'missing'}"
    assert not (tmp_path / "out").exists()


def test_forget_on_explicit_tables(tmp_path):
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event(event_id="e1", actor_id="alice"), event(event_id="e2", actor_id="bob")])
    assert prefgen("ingest", "--raw", "raw", "--tables", "out", "--no-progress", cwd=tmp_path).returncode == 0
    done = prefgen("forget", "alice", "--tables", "out", "--by", "dpo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["events_removed"] == 1 and record["requested_by"] == "dpo"
    assert "re-runs ingest" in done.stderr


def test_no_mlflow_skips_the_run_but_not_the_metrics_file(tmp_path):
    catalogue = shipped_paths() | {"raw": str(SAMPLE_LOG), "tables": "tables", "split": "split.parquet", "metrics": "metrics"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"paths": catalogue, "ingest": {}, "split": {}, "tracking": {"default_uri": "sqlite:///mlruns.db"}}))
    for stage in (["ingest", "--no-progress"], ["split"]):
        done = prefgen(*stage, "--no-mlflow", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        written, printed = json.loads((tmp_path / "metrics" / f"{stage[0]}.json").read_text()), json.loads(done.stdout.strip().splitlines()[-1])
        assert written and written.items() <= printed.items()
    assert not (tmp_path / "mlruns.db").exists()
    done = prefgen("split", cwd=tmp_path)  # a params file and no flag: tracked
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mlruns.db").exists()


def shipped_paths() -> dict[str, str]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]


def pipeline_params(tmp_path, drop=()) -> None:
    """The shipped params.yaml in `tmp_path`, less the `drop` sections."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = {k: v for k, v in params.items() if k not in drop}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_params_mistake_is_one_line_and_exit_2_never_a_traceback_or_a_default(tmp_path):
    (tmp_path / "params.yaml").write_text("split:\n  seed: 3\n  val_fraction: 0.1\n  seed: 7\n")
    done = prefgen("split", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (2, "error: params.yaml:4: invalid YAML: duplicate key 'seed'")
    pipeline_params(tmp_path, drop=("tracking",))  # read only once the stage logs its run: still one line, no default store
    done = prefgen("split", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: params: the 'tracking' section is missing (every stage reads its own; see the shipped params.yaml)"]
    assert not (tmp_path / "mlruns.db").exists()


def test_a_standalone_run_leaves_the_pipelines_metrics_and_lineage_alone(tmp_path):
    """On explicit paths beside the pipeline's params.yaml: no data/metrics/*.json (DVC would rerun the stage), an MLflow
    run only with --mlflow and then tagged standalone, metrics only where --metrics says."""
    pipeline_params(tmp_path)
    for stage in (["ingest", "--raw", str(SAMPLE_LOG), "--tables", "tables", "--no-progress"],
                  ["split", "--tables", "tables", "--split", "split.parquet"]):
        done = prefgen(*stage, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlruns.db").exists()
    done = prefgen("centrality", "--tables", "tables", "--split", "split.parquet", "--centrality", "centrality", "--mlflow",
                   "--metrics", "scratch/centrality.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "data").exists()
    written = json.loads((tmp_path / "scratch" / "centrality.json").read_text())
    assert written and written.items() <= json.loads(done.stdout.strip().splitlines()[-1]).items()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.data.tags.get("prefgen.standalone"), r.data.tags.get("prefgen.stage")) for r in runs] == [("centrality", None)]


def test_a_flow_names_a_params_mistake_in_one_line_before_it_starts(tmp_path):
    """The flows check every section first: a bad value is one line and exit 2, not a flow's traceback."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train_vq"]["profiles"]["demo"]["epochs"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for flow in ("retrain", "nightly"):  # demo calls the same check
        done = subprocess.run([sys.executable, "-m", f"flows.{flow}", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
        lines = done.stderr.strip().splitlines()
        assert (done.returncode, len(lines)) == (2, 1), done.stderr
        assert lines[0].startswith("error: params.train_vq.epochs") and "Traceback" not in done.stderr


def test_every_stage_has_its_generated_command_with_its_own_help_and_paths():
    """One command per row of the table of stages, each with the stage's help and one option per catalogue key it touches."""
    from typer.testing import CliRunner

    from prefgen.cli import app
    from prefgen.stage_table import STAGES

    for stage in STAGES:
        shown = CliRunner().invoke(app, [*stage.command, "--help"], terminal_width=400)
        assert shown.exit_code == 0, (stage.name, shown.output)
        assert " ".join(stage.help.split()[:4]) in " ".join(shown.output.split()), stage.name
        for key in (*stage.reads, *stage.writes):
            assert f"--{key.replace('_', '-')}" in shown.output, (stage.name, key)


def test_a_standalone_run_must_name_what_it_writes_and_all_or_none_of_what_it_reads(tmp_path):
    pipeline_params(tmp_path)
    done = prefgen("centrality", "--tables", "tables", "--split", "split.parquet", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().startswith("error: a `centrality` run on explicit paths writes only where told: "
                                                                  "give --centrality too"), done.stderr
    done = prefgen("centrality", "--tables", "tables", "--centrality", "out", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().startswith("error: --tables needs --split"), done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_a_catalogue_mistake_is_one_line_naming_the_key(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["paths"]["split"]
    params["paths"]["tabels"] = "t"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = prefgen("split", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (2, "error: params.paths: unknown key 'tabels' (did you mean 'tables'?)")
    params["paths"].pop("tabels")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = prefgen("split", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (2, "error: params.paths lacks split: give every catalogue key (see params.yaml)")
