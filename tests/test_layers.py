"""Who may import whom: the layering that makes each stage's derived code deps mean something."""

from pathlib import Path

from prefgen.codedeps import direct_imports, stage_code_deps
from prefgen.stage_table import STAGES
from tests.conftest import ROOT

# The command line, and what runs stages by the table of stages (prefgen/rescore.py judges a bundle by running them).
WIRING = {"prefgen/cli.py", "prefgen/stage_cli.py", "prefgen/stage_table.py", "prefgen/__main__.py", "prefgen/codedeps.py",
          "prefgen/registry/cli.py", "prefgen/rescore.py"}
JUDGES = {"reference", "eval_graph", "eval_holdout", "eval_mapper", "eval_generation", "train_oracle", "train_judges", "eval_guidance"}  # stages whose code is evaluation's


# Above the stages: a pipeline folder is made from the table of stages and their code deps.
WIRING_PACKAGES = ("prefgen/stages/", "prefgen/pipeline_folder/", "flows/")


def library_modules() -> list[str]:
    modules = (p.relative_to(ROOT).as_posix() for p in (ROOT / "prefgen").rglob("*.py"))
    return sorted(m for m in modules if m not in WIRING and not m.startswith(WIRING_PACKAGES))


def test_library_code_never_imports_the_wiring():
    """The stage modules, the pipeline folder's maker, the CLI and the flows call the library; the library calls none of them."""
    for module in library_modules():
        wiring = sorted(f for f in direct_imports(module, ROOT) if f in WIRING or f.startswith(WIRING_PACKAGES))
        assert not wiring, f"{module} imports {wiring}"


def test_no_stage_runs_the_registry_of_sections_or_another_stages_config():
    """A stage's closure holds its own package's config and no other: editing train_vq's config reruns no Step 1 stage."""
    for stage in STAGES:
        closure = stage_code_deps(stage.name, ROOT)
        assert "prefgen/config.py" not in closure, stage.name
        assert not set(closure) & WIRING, stage.name
    assert "prefgen/generation/config.py" not in stage_code_deps("train_graph", ROOT)
    assert "prefgen/preference/config.py" not in stage_code_deps("train_vq", ROOT)


def test_trainers_never_run_evaluation_code():
    """What judges against truth (prefgen/eval/) is no trainer's code: the metrics trainers choose epochs by are in
    prefgen/metrics/."""
    for stage in STAGES:
        if stage.name in JUDGES:
            continue
        judged = sorted(f for f in stage_code_deps(stage.name, ROOT) if f.startswith("prefgen/eval/"))
        assert not judged, f"{stage.name} runs {judged}"
    for package in ("vision", "preference", "generation", "metrics", "social", "data", "serving"):
        for module in sorted((ROOT / "prefgen" / package).rglob("*.py")):
            path = Path(module).relative_to(ROOT).as_posix()
            assert not any(f.startswith("prefgen/eval/") for f in direct_imports(path, ROOT)), f"{path} imports prefgen/eval"


def test_the_table_of_stages_and_dvc_yaml_say_the_same():
    """Each stage's params sections and catalogue paths, as the CLI knows them, are what dvc.yaml tracks for it."""
    import re

    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [stage.name for stage in STAGES] == list(stages)
    for stage in STAGES:
        entry = stages[stage.name]
        assert entry["cmd"] == f"python -m prefgen {' '.join(stage.command)} --params params.yaml", stage.name
        assert set(entry.get("params", [])) - {"profile"} == set(stage.sections), stage.name

        def keys(entries):
            return {m for e in entries or [] for m in re.findall(r"\$\{paths\.(\w+)\}", str(next(iter(e)) if isinstance(e, dict) else e))}

        assert keys(entry.get("deps")) == set(stage.reads), stage.name
        tracked_outs = set(stage.writes) - {"checkpoints", "plots"}  # checkpoints survive a killed run: no DVC output
        assert keys(entry.get("outs")) == tracked_outs, stage.name
        assert keys(entry.get("metrics")) == {"metrics"}, stage.name
        assert keys(entry.get("plots")) == ({"plots"} & set(stage.writes)), stage.name
