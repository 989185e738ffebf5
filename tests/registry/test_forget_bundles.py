"""A deletion request reaches the registry and the nightly flow: bundles that hold the person are tagged and may
not serve again, their segment is refused before any generation, and `forget --report` lists what is left."""

import dataclasses
import json
import os

import mlflow
import polars as pl
import torch
from typer.testing import CliRunner

from flows.nightly import _prepare
from prefgen import tracking
from prefgen.cli import app
from prefgen.data.config import IngestConfig
from prefgen.data.forget import subject_hash
from prefgen.data.ingest import run as ingest
from prefgen.generation.config import GuidanceConfig
from prefgen.paths import Paths
from prefgen.registry import store
from prefgen.registry.bundle import assemble
from prefgen.registry.config import RegistryConfig
from prefgen.serving.gallery import segment_key
from prefgen.tracking_config import TrackingConfig
from prefgen.vision.config import VisualFeaturesConfig
from tests.conftest import event, write_jsonl
from tests.registry.bundles import model_folders

NAME = RegistryConfig().model_name
CATALOGUE = {f.name: f"data/{f.name}" for f in dataclasses.fields(Paths)} | {"raw": "raw", "tables": "tables", "nightly": "nights"}
PARAMS = f"""
paths: {json.dumps(CATALOGUE)}
ingest: {{}}
forget: {{images: drop}}
tracking: {{default_uri: "sqlite:///mlruns.db", artifact_dir: mlartifacts, experiment: forget-test}}
registry: {{}}
sampler: {{}}
nightly: {{campaign: campaign.yaml}}
"""
CAMPAIGN = "name: c\nsegments: {ids: [ind:alice, grp:g1], kinds: [individual]}\nprompts: [a star]\nimages_per_prompt: 1\n"


def _register(client, root, seed, individuals):
    """A bundle whose graph model lists these individuals (and group g1) as segments, registered as a new version."""
    parts = model_folders(root, seed)
    ids = [f"ind:{i}" for i in individuals] + ["grp:g1"]
    pl.DataFrame({"segment_id": ids, "kind": ["individual"] * len(individuals) + ["group"]}).write_parquet(
        parts["graph"] / "segments.parquet")
    folder = root / f"bundle-{seed}"
    assemble(parts, torch.ones(3, 4), VisualFeaturesConfig(), GuidanceConfig(steps=5), {"git": {}}, folder)
    with mlflow.start_run(run_name="register"):
        return str(store.register(client, RegistryConfig(), folder, {"m": 1.0}, "E1", {})[0].version)


def _earlier_night(root):
    night = root / "nights" / "c" / "2026-11-30"
    (night / "gallery" / "segments").mkdir(parents=True)
    pl.DataFrame({"segment": ["ind:alice", "ind:bob", "ind:alice"], "generation_run_id": ["run7"] * 3}).write_parquet(
        night / "manifest.parquet")
    (night / "gallery" / "segments" / f"{segment_key('ind:alice')}.html").write_text("<html></html>")
    cached = root / ".dvc" / "cache" / "files" / "md5" / "ab" / "cdef"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"an old table")
    os.utime(cached, (0, 0))


def test_forget_tags_bundles_refuses_them_and_the_segment_and_reports_leftovers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(PARAMS)
    (tmp_path / "campaign.yaml").write_text(CAMPAIGN)
    tracking.configure(TrackingConfig(default_uri="sqlite:///mlruns.db", experiment="forget-test"), tmp_path)
    client = mlflow.MlflowClient()
    v1 = _register(client, tmp_path, 1, ["alice", "bob"])  # trained with alice
    v2 = _register(client, tmp_path, 2, ["bob"])  # trained without her
    store.promote(client, NAME, v1, "first")
    write_jsonl(tmp_path / "raw" / "a.jsonl", [event(event_id="e1", actor_id="alice"), event(event_id="e2", actor_id="bob")])
    ingest(IngestConfig(), tmp_path / "raw", tmp_path / "tables")
    _earlier_night(tmp_path)
    cli = CliRunner()

    done = cli.invoke(app, ["forget", "alice", "--by", "dpo"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["bundle_versions_tagged"] == [v1]
    subject = subject_hash("alice")
    assert json.loads(client.get_model_version(NAME, v1).tags[store.FORGOTTEN_TAG]) == [subject]
    assert store.FORGOTTEN_TAG not in client.get_model_version(NAME, v2).tags

    # The nightly flow's plan, made before any generation: alice's segment is refused, the champion serves the rest.
    night = _prepare(str(tmp_path), None, "2026-12-01")
    assert [(r.value, r.reason) for r in night.plan.rejected] == [(f"ind:sha256:{subject}", "forgotten")]
    assert night.plan.segments == ["grp:g1", "ind:bob"] and night.loaded.ref.version == v1

    store.promote(client, NAME, v2, "retrained without alice")
    refused = cli.invoke(app, ["promote", "--bundle", v1, "--reason", "back"])
    assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith(f"error: version {v1} was trained on 1 individual(s) who asked to be forgotten")
    assert cli.invoke(app, ["rollback"]).exit_code == 2  # the previous champion is v1: refused as well
    assert str(store.version_by_alias(client, NAME, store.CHAMPION).version) == v2

    report = cli.invoke(app, ["forget", "alice", "--report"])
    assert report.exit_code == 0 and "alice" not in report.stdout
    left = json.loads(report.stdout)
    assert left["subject_sha256"] == subject and left["tables"] == {"events": 0, "images": 0, "quarantine": 0}
    assert [(b["version"], b["tagged"]) for b in left["bundle_versions"]] == [(v1, True)]
    assert [(n["images"], bool(n["gallery_page"])) for n in left["nights"]] == [(2, True)]
    assert left["mlflow_artifacts"] == {"bundle_models": [v1], "nightly_runs": ["run7"]}
    assert left["dvc_cache"]["objects_from_before_the_request"] == 1
