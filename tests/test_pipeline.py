"""The DVC spine for real: `dvc repro` in a throwaway git repo, stage order, forget -> rerun."""

import json
import sys

import polars as pl
import pytest
import torch

from prefgen import pipeline
from prefgen.eval.generation import named_attribute
from prefgen.generation.assemble import pipeline_from_outputs
from prefgen.generation.sampling import GuidanceConfig
from prefgen.params import load_params
from prefgen.paths import Paths
from prefgen.vision.config import VisualFeaturesConfig
from tests.conftest import ROOT, run

pytestmark = pytest.mark.slow


def dvc(repo, *args):
    return run([sys.executable, "-m", "dvc", *args], repo, activate=True).stdout


def test_stage_order_follows_deps(tmp_path):
    (tmp_path / "params.yaml").write_text("a: {out: data/a}\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  c: {cmd: x, deps: [data/b/file.parquet], outs: [data/c]}\n"
        "  b: {cmd: x, deps: [data/a], outs: [data/b]}\n"
        "  a: {cmd: x, deps: [raw], outs: ['${a.out}']}\n"
    )
    assert pipeline.stage_order(tmp_path) == ["a", "b", "c"]
    assert pipeline.stage_order(ROOT) == ["synth", "train_oracle", "ingest", "split", "prepare_images", "centrality", "image_store",
                                          "reference", "train_clip", "train_vq", "train_judges", "visual_features", "train_graph",
                                          "eval_graph", "eval_holdout", "train_mapper", "eval_mapper", "train_w", "train_diffusion",
                                          "eval_generation", "eval_guidance"]


def test_flow_helpers_run_stages_without_an_activated_virtualenv(project, monkeypatch):
    """`.venv/bin/python -m flows.retrain` must work with a PATH that has no `python` of the venv."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert pipeline.is_changed(project, "ingest")
    pipeline.repro(project, "synth")
    lines = pipeline.repro(project, "ingest")
    assert any("ingest [1/" in line for line in lines)
    assert not pipeline.is_changed(project, "ingest")


def test_only_a_stage_killed_by_a_signal_is_a_failure_worth_retrying(tmp_path, monkeypatch):
    """The retrain flow retries a stage only on a transient StageError: a stage's own error would fail again."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n"
                                       "  crash:\n    cmd: python -c \"import sys; sys.exit('bad input')\"\n"
                                       "  killed:\n    cmd: python -c \"import os, signal; os.kill(os.getpid(), signal.SIGKILL)\"\n")
    with pytest.raises(pipeline.StageError, match="(?s)bad input.*failed to reproduce 'crash'") as own:
        pipeline.repro(tmp_path, "crash")
    assert not own.value.transient
    with pytest.raises(pipeline.StageError, match="failed to reproduce 'killed'") as killed:
        pipeline.repro(tmp_path, "killed")
    assert killed.value.transient


def test_repro_then_noop_then_forget_reruns(trained_project):
    """On the project the retrain flow trained (tests/conftest.py): plain `dvc repro` agrees it is up to date;
    a deletion request then makes DVC plan exactly the stages downstream of the tables, and Step 1's chain reruns."""
    project, first = trained_project
    assert [r["stage"] for r in first if r["ran"]] == pipeline.stage_order(project) + ["register"]
    metrics = json.loads((project / "data" / "metrics" / "ingest.json").read_text())
    assert metrics["read"] == metrics["valid"] + metrics["quarantined"] > 0
    assert metrics["tables"]["events"] > 0
    check_stage_outputs(project)

    again = dvc(project, "repro")
    assert "Running stage" not in again and "didn't change" in again
    assert not pipeline.is_changed(project, "ingest")

    run([sys.executable, "-m", "prefgen", "forget", "u1", "--by", "test"], project)
    assert pipeline.is_changed(project, "ingest")  # the tables changed under DVC
    # What a full `dvc repro` would run now. A dry run lists the stages whose own inputs changed; the stages after
    # them (eval_graph, train_w, and the image trainers, which read the image store) follow from the DAG that
    # test_stage_order_follows_deps checks. eval_mapper reads the tables and the split itself (its cold-start task).
    planned = dvc(project, "repro", "--dry")
    assert {s for s in pipeline.stage_order(project) if f"Running stage '{s}'" in planned} == {
        "ingest", "split", "centrality", "reference", "image_store", "train_graph", "eval_holdout", "train_mapper", "eval_mapper",
        "eval_generation", "train_judges", "eval_guidance"}
    # Rerun for real the stages that read the tables and truth (which still holds the forgotten person) side by side.
    # The later stages would run the first run's code on the new tables; rerunning them all here cost five minutes of CI.
    rerun = dvc(project, "repro", "reference", "eval_graph")
    for stage in ("ingest", "split", "centrality", "reference", "train_graph", "eval_graph"):
        assert f"Running stage '{stage}'" in rerun
    assert "Running stage 'synth'" not in rerun and "Running stage 'visual_features'" not in rerun
    assert not pipeline.is_changed(project, "ingest") and not pipeline.is_changed(project, "eval_graph")
    lock = pipeline.lock_entry(project, "ingest")
    assert lock["outs"]["data/02_tables"].endswith(".dir")
    assert json.loads((project / "data" / "metrics" / "reference.json").read_text())["ref_cold_auc"] > 0.5
    assert lock["params"]["params.yaml"]["ingest"]["max_id_len"] == 256

    # The diffusion stage, unchanged, under torchrun with two gloo ranks: one model, written once.
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "prefgen", "train-diffusion", "--params", "params.yaml"], project)
    diffusion = json.loads((project / "data" / "metrics" / "train_diffusion.json").read_text())
    assert diffusion["world_size"] == 2 and diffusion["ranks_identical"] and diffusion["profile"] == "demo"
    assert (project / "data" / "04_models" / "diffusion" / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    # The guided sampler, assembled from the stages' outputs on disk, makes images for a real segment.
    models = project / "data" / "04_models"
    paths = Paths.from_params(load_params(project / "params.yaml")).rooted(project)
    pipe = pipeline_from_outputs(paths, VisualFeaturesConfig(), GuidanceConfig(steps=3, guide_from=0.0))
    segment = pl.read_parquet(models / "graph" / "segments.parquet")["segment_id"][0]
    images = pipe(segment, "a red star on a dots background", n=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
    # A model saved with diffusers' default clip_sample=True, as older models were, is sampled unclipped all the same.
    saved = models / "diffusion" / "scheduler" / "scheduler_config.json"
    written = saved.read_text()
    assert json.loads(written)["clip_sample"] is False
    saved.write_text(json.dumps(json.loads(written) | {"clip_sample": True}))
    old = pipeline_from_outputs(paths, VisualFeaturesConfig(), GuidanceConfig(steps=3))
    saved.write_text(written)
    assert old.scheduler.config.clip_sample is False


def fused_figures(rows: pl.DataFrame, half: str) -> tuple[float, float]:
    """A half's win rate and text consistency recomputed from the per-image table: the fused arm's pairs of that half,
    A winning when its images' mean utility for A is higher (a tie half), and the share of images read as the prompt says."""
    fused = rows.filter((pl.col("arm") == "fused") & (pl.col("half") == half))
    means = {(pair, side): u for pair, side, u in fused.group_by("pair", "side").agg(pl.col("utility_for_a").mean()).iter_rows()}
    pairs = sorted({pair for pair, _ in means})
    wins = [1.0 if means[p, "A"] > means[p, "B"] else 0.5 if means[p, "A"] == means[p, "B"] else 0.0 for p in pairs]
    consistent = [row[named_attribute(row["prompt"])[0]] == named_attribute(row["prompt"])[1] for row in fused.iter_rows(named=True)]
    return sum(wins) / len(wins), sum(consistent) / len(consistent)


def check_stage_outputs(project):
    """Stages wrote what they promise: Step 1's refit, Step 3's evaluation table, images and figures, VQ and W metrics."""
    graph = json.loads((project / "data" / "metrics" / "train_graph.json").read_text())
    assert graph["refit_epochs"] == graph["best_epoch"] + 1  # params.yaml's train_graph.refit: the model of every line
    choice = json.loads((project / "data" / "04_models" / "graph" / "influence.json").read_text())
    assert choice["folds"] == 10 and "none" in choice["candidates"] and "all" in choice["candidates"]
    assert graph["influence_features"] == ", ".join(choice["chosen"])  # the exported attention reads what was chosen
    shape = json.loads((project / "data" / "04_models" / "graph" / "config.json").read_text())["shape"]
    assert shape["feature_names"] == choice["chosen"] and shape["n_features"] == len(choice["chosen"])
    judged = json.loads((project / "data" / "metrics" / "eval_generation.json").read_text())
    rows = pl.read_parquet(project / "data" / "05_eval" / "generation" / "images.parquet")
    assert judged["pairs"] == judged["dev_pairs"] + judged["test_pairs"] == 4
    for half in ("dev", "test"):  # each half's figures from its own pairs only
        assert rows.filter(pl.col("half") == half)["pair"].n_unique() == judged[f"{half}_pairs"]
        if judged[f"{half}_pairs"]:
            assert sorted(judged[half]["ablation"]) == ["cfg", "fused", "none", "pref_grad", "text_grad"]
            assert (judged[half]["win_rate"], judged[half]["text_consistency"]) == pytest.approx(fused_figures(rows, half))
    assert rows.height == 5 * 4 * 2 and (project / "data" / "05_eval" / "generation" / "fused_pairs.png").is_file()
    guided = json.loads((project / "data" / "metrics" / "eval_guidance.json").read_text())
    jobs = pl.read_parquet(project / "data" / "05_eval" / "guidance" / "jobs.parquet")
    assert jobs.height == guided["jobs_per_arm"] == guided["prompts"] * jobs["segment"].n_unique()
    for half in ("dev", "test"):  # each half's uplift from its own segments' jobs only
        mine = jobs.filter(pl.col("half") == half)
        assert guided[half]["jobs"] == mine.height and guided[half]["segments"] == mine["segment"].n_unique()
        uplift = (mine["preference_fused"] - mine["preference_none"]).mean()
        assert guided[half]["uplift_over_none_ci_low"] <= guided[half]["uplift_over_none"] == pytest.approx(uplift)
        assert guided[half]["text_consistency"] == pytest.approx(mine["text_match_fused"].mean())
    assert (project / "data" / "05_eval" / "guidance" / "arms.png").is_file()
    vq = json.loads((project / "data" / "metrics" / "train_vq.json").read_text())
    assert vq["val_psnr"] > 5 and 0 < vq["codebook_usage"] <= 1
    assert json.loads((project / "data" / "metrics" / "train_w.json").read_text())["val_cosine"] > 0.5
