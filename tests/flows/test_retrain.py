"""The Prefect retrain flow for real (temporary local server), with MLflow lineage read back; then the bundle it
registered makes images whose lineage reaches the raw logs and which regenerate byte for byte."""

import json
import tempfile

import mlflow
import pandas as pd
import polars as pl
import pytest
from typer.testing import CliRunner

from flows.retrain import retrain
from prefgen import pipeline, tracking
from prefgen.cli import app
from prefgen.config import tracking_config
from prefgen.params import load_params
from tests.conftest import TEST_WORLD

pytestmark = pytest.mark.slow


def test_retrain_runs_stages_in_order_and_records_lineage(trained_project, monkeypatch):
    project, first = trained_project
    assert [r["stage"] for r in first] == pipeline.stage_order(project) + ["register"]
    assert all(r["ran"] for r in first)
    bundle = first[-1]
    assert (bundle["version"], bundle["gate"], bundle["aliases"]) == ("1", "passed", ["champion"])
    assert sorted(bundle["metrics"]) == ["eval_generation.test.text_consistency", "eval_generation.test.win_rate",
                                         "eval_graph.test.influence_spearman", "eval_mapper.test.cold_auc"]

    tracking.configure(tracking_config(load_params(project / "params.yaml")), project)
    runs = {r.data.tags["prefgen.stage"]: r for r in all_runs() if r.data.tags["prefgen.stage"] not in IMAGE_RUNS}
    assert sorted(runs) == sorted(pipeline.stage_order(project) + ["register"])
    world = json.loads((project / "data" / "metrics" / "synth.json").read_text())["world_sha256"]
    assert {s: r.data.tags.get("world.sha256") for s, r in runs.items()} == dict.fromkeys(runs, world)  # every run names its world
    run = runs["ingest"]
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["prefgen.stage"] == "ingest"
    assert tags["prefect.flow_run_id"]
    assert len(tags["git.commit"]) == 40
    ingest_result = next(r for r in first if r["stage"] == "ingest")
    assert json.loads(tags["dvc.lock.outs"]) == ingest_result["lock"]["outs"]
    assert json.loads(tags["dvc.lock.deps"])[f"data/01_raw/{TEST_WORLD}"].endswith(".dir")
    assert metrics["read"] == metrics["valid"] + metrics["quarantined"] > 0
    assert run.data.params["max_id_len"] == "256"

    assert runs["register"].data.tags["prefect.flow_run_id"] == tags["prefect.flow_run_id"]

    before = len(all_runs())
    second = retrain(str(project))
    assert not any(r["ran"] for r in second)  # nothing changed: no stage runs, no bundle registered
    assert second[-1]["version"] == "1" and not second[-1]["created"]
    assert len(all_runs()) == before

    check_images_from_the_champion(project, monkeypatch)


def cli(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.stdout


def check_images_from_the_champion(project, monkeypatch):
    monkeypatch.chdir(project)
    scratch = project / "scratch"
    scratch.mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where generate and regenerate download the bundle
    segment = pl.read_parquet(project / "data" / "04_models" / "graph" / "segments.parquet")["segment_id"][0]
    made = json.loads(cli("generate", "--segment", segment, "--prompt", "a star", "--n", "2", "--out", "out").splitlines()[-1])
    assert made["images"] == 2 and made["bundle_version"] == "1"
    image = project / "out" / made["files"][1]

    chain = cli("lineage", str(image))
    for expected in (f"made from    segment '{segment}', prompt 'a star', seed 1", f"generation run {made['run_id']}",
                     "bundle         prefgen-bundle version 1  aliases ['champion']", "(matches the image's)",
                     "train_diffusion", "(dvc.lock digest)", "data/02_tables", f"raw logs       data/01_raw/{TEST_WORLD}: 91 file(s)", "events-2026-07-03.jsonl  sha256"):
        assert expected in chain, f"{expected!r} not in:\n{chain}"
    info = json.loads(cli("lineage", image.name[:16], "--json"))  # by sha alone: found in the run's logged manifest
    assert info["image"]["manifest"].startswith(f"runs:/{made['run_id']}/")
    assert info["training_runs"]["vq"]["run"]["run_id"] == runs_by_stage()["train_vq"]
    assert {f["source"] for f in info["raw_logs"]["files"]} >= {"images.jsonl", "events-2026-07-03.jsonl"}

    again = json.loads(cli("regenerate", image.name[:16]).splitlines()[-1])
    assert again["match"] and again["regenerated_sha256"] == image.stem
    assert not list(scratch.glob("prefgen-bundle-*"))  # each download of the bundle is removed once used

    model = mlflow.pyfunc.load_model("models:/prefgen-bundle@champion")  # the pyfunc flavour, no pickle involved
    out = model.predict(pd.DataFrame({"segment": [segment] * 2, "prompt": ["a star"] * 2, "seed": [0, 1]}))
    made_rows = pl.read_parquet(project / "out" / "manifest.parquet").sort("seed")  # the same request through the CLI
    assert out["png"][0].startswith(b"\x89PNG")  # its bytes differ: the PNG's metadata names the pyfunc, not version 1
    assert out["preference_score"].tolist() == pytest.approx(made_rows["preference_score"].to_list())
    assert out["text_score"].tolist() == pytest.approx(made_rows["text_score"].to_list())
    assert model.get_raw_model().digest == made["bundle_digest"]

    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("steps: 4", "steps: 5"))  # the sampler's two evaluations are now stale
    refused = CliRunner().invoke(app, ["register"])
    assert refused.exit_code == 2 and "not up to date (stale: ['eval_generation', 'eval_guidance'])" in refused.output
    (project / "params.yaml").write_text(params)


IMAGE_RUNS = ("generate", "nightly")  # other flow tests share the project and make images with its bundle


def all_runs() -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def runs_by_stage() -> dict[str, str]:
    return {r.data.tags["prefgen.stage"]: r.info.run_id for r in all_runs() if r.data.tags["prefgen.stage"] not in IMAGE_RUNS}
