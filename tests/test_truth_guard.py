"""No training stage reads a synthetic world's ground truth.

Three guards: dvc.yaml gives the truth folder only to evaluation stages; no
library module outside prefgen/eval (and the generator that writes it) names
truth at all; and the training-side stages, run for real, succeed with the
truth folder moved out of reach while an audit hook records every file Python
opens (polars opens files from Rust, which the hook cannot see; moving the
folder covers that).
"""

import sys
from pathlib import Path

import yaml

from prefgen.config import IngestConfig, SplitConfig, SynthConfig
from prefgen.data import split
from prefgen.data.ingest import run as ingest
from prefgen.data.synth import run as synth
from tests.conftest import ROOT

EVALUATION_STAGES = {"reference", "eval_graph", "eval_mapper", "eval_generation"}  # stages allowed to read truth (plus `synth`, which writes it)


def test_only_evaluation_stages_depend_on_truth():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    truth_dir = params["synth"]["truth_dir"]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        deps = " ".join(str(d) for d in stage.get("deps", []))
        reads_truth = truth_dir in deps or "truth_dir" in deps
        assert not reads_truth or name in EVALUATION_STAGES, f"stage {name} depends on ground truth"


def test_no_library_module_outside_eval_names_truth():
    allowed = {ROOT / "prefgen" / p for p in ("data/synth.py", "stages/synth.py", "config.py", "cli.py", "stages/reference.py", "stages/eval_generation.py")}
    for path in (ROOT / "prefgen").rglob("*.py"):
        if path in allowed or path.is_relative_to(ROOT / "prefgen" / "eval"):
            continue
        code = path.read_text().lower().replace("ground truth", "").replace("ground-truth", "")
        assert "truth" not in code, f"{path.relative_to(ROOT)} mentions truth"


def test_training_side_stages_never_open_truth(tmp_path):
    cfg = SynthConfig(world="guard", n_individuals=200, n_communities=3, n_groups=20, n_images=60, image_size=16)
    synth(cfg, tmp_path / "raw", tmp_path / "truth")
    hidden = tmp_path / "elsewhere"
    (tmp_path / "truth").rename(hidden)  # out of reach: a stage that needs it fails
    truth = str((tmp_path / "truth").resolve())
    opened: list[str] = []

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], str | bytes | Path):
            path = str(Path(args[0] if not isinstance(args[0], bytes) else args[0].decode()).resolve())
            if path.startswith(truth):
                opened.append(path)

    sys.addaudithook(hook)  # hooks cannot be removed; this one only records
    ingest(IngestConfig(), tmp_path / "raw" / "guard", tmp_path / "tables")
    split.run(SplitConfig(), tmp_path / "tables", tmp_path / "split.parquet")
    split.training_events(tmp_path / "tables", tmp_path / "split.parquet").collect()
    try:
        from prefgen.config import CentralityConfig
        from prefgen.social import centrality

        centrality.run(CentralityConfig(), tmp_path / "tables", tmp_path / "centrality")
    except ImportError:  # pragma: no cover - centrality lands with its own tests
        pass
    assert opened == []
    # The hook does see opens: reading truth on purpose is recorded.
    hidden.rename(tmp_path / "truth")
    (Path(truth) / "guard" / "world.json").read_text()
    assert opened
