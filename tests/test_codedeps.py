"""Stage code deps derived from imports: the closure on a small package, dvc.yaml rewritten and checked, and on the
trained project, editing a module makes exactly the stages that import it stale."""

import json
import sys
from pathlib import Path

import pytest

from prefgen.codedeps import RUNNER, CodeDepsError, Difference, check, main, module_closure, stage_code_deps, write
from prefgen.pipeline import stage_order
from tests.conftest import ROOT, run

PACKAGE_FILES = {
    "prefgen/__init__.py": "",
    "prefgen/util.py": "NAME = 1\n",
    "prefgen/lonely.py": "import prefgen.util\n",  # imported by nobody: never in a closure
    "prefgen/a/__init__.py": "",
    "prefgen/a/one.py": "def f():\n    from prefgen import util\n",
    "prefgen/a/two.py": "VALUE = 2\n",
    "prefgen/b/__init__.py": "",
    "prefgen/b/deep/__init__.py": "",
    "prefgen/b/deep/leaf.py": "import numpy\n",
}
ENTRY = "prefgen/a/entry.py"
ENTRY_ALONE = {ENTRY, "prefgen/__init__.py", "prefgen/a/__init__.py"}
LEAF = {"prefgen/b/__init__.py", "prefgen/b/deep/__init__.py", "prefgen/b/deep/leaf.py"}


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("source", "imported"),
    [
        ("import os\nimport numpy as np\nfrom collections import Counter\n", set()),
        ("import prefgen.b.deep.leaf\n", LEAF),
        ("from prefgen.b.deep import leaf\n", LEAF),
        ("from prefgen.b import deep\n", {"prefgen/b/__init__.py", "prefgen/b/deep/__init__.py"}),
        ("from prefgen.util import NAME\n", {"prefgen/util.py"}),
        ("def f():\n    import prefgen.util\n", {"prefgen/util.py"}),
        ("class C:\n    def m(self):\n        from prefgen.util import NAME\n", {"prefgen/util.py"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prefgen import util\n", {"prefgen/util.py"}),
        ("from . import two\n", {"prefgen/a/two.py"}),
        ("from .two import VALUE\n", {"prefgen/a/two.py"}),
        ("from .. import util\n", {"prefgen/util.py"}),
        ("from ..b.deep import leaf\n", LEAF),
        ("from . import one\n", {"prefgen/a/one.py", "prefgen/util.py"}),  # one imports util inside a function
    ],
)
def test_closure_follows_every_kind_of_project_import(tmp_path, source, imported):
    root = write_files(tmp_path, PACKAGE_FILES | {ENTRY: source})
    assert module_closure([ENTRY], root) == ENTRY_ALONE | imported


def test_closure_of_a_package_init_resolves_relative_imports_from_the_package_itself(tmp_path):
    root = write_files(tmp_path, PACKAGE_FILES | {"prefgen/a/__init__.py": "from .two import VALUE\n"})
    assert module_closure(["prefgen/a/__init__.py"], root) == {"prefgen/__init__.py", "prefgen/a/__init__.py", "prefgen/a/two.py"}


def test_closure_terminates_on_an_import_cycle(tmp_path):
    root = write_files(tmp_path, {"prefgen/__init__.py": "", "prefgen/x.py": "import prefgen.y\n",
                                  "prefgen/y.py": "def f():\n    from prefgen import x\n"})
    assert module_closure(["prefgen/x.py"], root) == {"prefgen/__init__.py", "prefgen/x.py", "prefgen/y.py"}


@pytest.mark.parametrize(("source", "module"), [
    ("\n\ndef f():\n    import prefgen.nowhere\n", "prefgen.nowhere"),
    ("\n\n\nfrom prefgen.nowhere import x\n", "prefgen.nowhere"),
    ("\n\n\nfrom .nowhere import x\n", "prefgen.a.nowhere"),
    ("\n\n\nfrom prefgen.b.nowhere import x\n", "prefgen.b.nowhere"),
])
def test_an_import_of_a_missing_project_module_names_the_file_and_line(tmp_path, source, module):
    root = write_files(tmp_path, PACKAGE_FILES | {ENTRY: source})
    with pytest.raises(CodeDepsError, match=f"^prefgen/a/entry.py:4 imports {module}, "):
        module_closure([ENTRY], root)


STAGE_PACKAGE = {
    "prefgen/__init__.py": "",
    "prefgen/params.py": "",
    "prefgen/lib.py": "def f():\n    from prefgen import params\n",
    "prefgen/other.py": "",
    "prefgen/cli.py": "from prefgen.stages import first, second\n",
    "prefgen/stages/__init__.py": "",
    "prefgen/stages/runner.py": "from prefgen import params\n",
    "prefgen/stages/first.py": "from prefgen.lib import f\n",
    "prefgen/stages/second.py": "import prefgen.other\n",
}
STAGE_RUNNER = ["prefgen/__init__.py", "prefgen/params.py", "prefgen/stages/__init__.py", "prefgen/stages/runner.py"]


def test_a_stage_runs_its_module_and_the_runner(tmp_path):
    root = write_files(tmp_path, STAGE_PACKAGE)
    assert stage_code_deps("first", root) == sorted(STAGE_RUNNER + ["prefgen/lib.py", "prefgen/stages/first.py"])
    write_files(root, {"prefgen/stages/runner.py": "import prefgen.other\n"})  # what the runner imports is every stage's
    assert stage_code_deps("first", root) == sorted(STAGE_RUNNER[:3] + ["prefgen/lib.py", "prefgen/other.py",
                                                                       "prefgen/stages/first.py", "prefgen/stages/runner.py"])
    with pytest.raises(CodeDepsError, match="stage 'absent' has no module prefgen/stages/absent.py"):
        stage_code_deps("absent", root)


DVC_YAML = """\
# header comment
stages:
  first:
    cmd: python -m prefgen first --params params.yaml
    deps:
      - ${first.tables_dir}  # data, with a comment
      - prefgen/stages  # a directory counts as every .py under it
      - ${first.split}
      - prefgen/lib.py  # kept with its comment
    params:
      - first
    outs:
      # a comment above an out
      - ${first.out_dir}:
          persist: true

  second:
    cmd: python -m prefgen second
    deps:
      - 'data/raw'
      - prefgen/gone.py
    metrics:
      - ${second.metrics}:
          cache: false
    plots:
      - ${second.curve}:
          x: epoch
# trailing comment
"""
DVC_YAML_WRITTEN = """\
# header comment
stages:
  first:
    cmd: python -m prefgen first --params params.yaml
    deps:
      - ${first.tables_dir}  # data, with a comment
      - ${first.split}
      - prefgen/__init__.py
      - prefgen/lib.py  # kept with its comment
      - prefgen/params.py
      - prefgen/stages/__init__.py
      - prefgen/stages/first.py
      - prefgen/stages/runner.py
    params:
      - first
    outs:
      # a comment above an out
      - ${first.out_dir}:
          persist: true

  second:
    cmd: python -m prefgen second
    deps:
      - 'data/raw'
      - prefgen/__init__.py
      - prefgen/other.py
      - prefgen/params.py
      - prefgen/stages/__init__.py
      - prefgen/stages/runner.py
      - prefgen/stages/second.py
    metrics:
      - ${second.metrics}:
          cache: false
    plots:
      - ${second.curve}:
          x: epoch
# trailing comment
"""


def test_check_names_the_differences_and_write_fixes_only_them(tmp_path):
    root = write_files(tmp_path, STAGE_PACKAGE | {"dvc.yaml": DVC_YAML})
    assert check(root) == [
        Difference("first", missing=("prefgen/__init__.py", "prefgen/params.py"), extra=("prefgen/stages/second.py",)),
        Difference("second", missing=tuple(STAGE_RUNNER[:1] + ["prefgen/other.py"] + STAGE_RUNNER[1:] + ["prefgen/stages/second.py"]),
                   extra=("prefgen/gone.py",)),
    ]
    assert write(root)
    assert (root / "dvc.yaml").read_text() == DVC_YAML_WRITTEN
    assert check(root) == []
    assert not write(root)
    assert (root / "dvc.yaml").read_text() == DVC_YAML_WRITTEN


def test_write_handles_a_sequence_level_with_its_key_and_refuses_a_flow_list(tmp_path):
    compact = "stages:\n  second:\n    cmd: x\n    deps:\n    - data/raw\n    - prefgen/gone.py\n    outs:\n    - out\n"
    root = write_files(tmp_path, STAGE_PACKAGE | {"dvc.yaml": compact})
    assert write(root)
    assert (root / "dvc.yaml").read_text() == compact.replace("    - prefgen/gone.py\n", "".join(
        f"    - {path}\n" for path in stage_code_deps("second", root)))
    flow = "stages:\n  second:\n    cmd: x\n    deps: [data/raw, prefgen/gone.py]\n"
    (root / "dvc.yaml").write_text(flow)
    with pytest.raises(CodeDepsError, match="the deps of second: are not a block list"):
        write(root)
    assert (root / "dvc.yaml").read_text() == flow


def test_write_gives_a_stage_without_deps_its_code_after_cmd(tmp_path):
    head, tail = "stages:\n  first:\n    cmd: >-\n      python -m prefgen\n      first\n", "    outs:\n      - out\n"
    root = write_files(tmp_path, STAGE_PACKAGE | {"dvc.yaml": head + tail})
    assert write(root)
    code = "".join(f"      - {path}\n" for path in stage_code_deps("first", root))
    assert (root / "dvc.yaml").read_text() == head + "    deps:\n" + code + tail
    assert check(root) == []


def test_the_command_checks_then_writes(tmp_path, monkeypatch, capsys):
    root = write_files(tmp_path, STAGE_PACKAGE | {"dvc.yaml": DVC_YAML})
    monkeypatch.chdir(root)
    assert main(["--check"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "first: missing prefgen/__init__.py, prefgen/params.py; extra prefgen/stages/second.py",
        "second: missing prefgen/__init__.py, prefgen/other.py, prefgen/params.py, prefgen/stages/__init__.py, "
        "prefgen/stages/runner.py, prefgen/stages/second.py; extra prefgen/gone.py",
    ]
    assert main(["--write"]) == 0
    assert main(["--check"]) == 0
    assert "code deps rewritten" in capsys.readouterr().out
    (root / "prefgen/stages/first.py").write_text("import prefgen.nowhere\n")
    assert main(["--check"]) == 2
    assert "prefgen/stages/first.py:1 imports prefgen.nowhere" in capsys.readouterr().err


def test_the_real_dvc_yaml_lists_the_code_each_stage_imports():
    """Fails when an import changes and dvc.yaml was not rewritten: run `python -m prefgen.codedeps --write`."""
    assert check(ROOT) == []


LOADED = """import importlib, pathlib, sys
importlib.import_module(sys.argv[1]); importlib.import_module(sys.argv[2])
for module in list(sys.modules.values()):
    if module.__name__.split(".")[0] == "prefgen" and getattr(module, "__file__", None):
        print(pathlib.Path(module.__file__).resolve().relative_to(pathlib.Path.cwd()).as_posix())
"""


def test_the_closure_holds_every_project_module_python_loads_for_a_stage():
    """Python's own import of a stage module and the runner loads nothing the closure lacks (a dynamic import would);
    one stage, the one whose hand-written list missed modules (each import costs seconds of torch)."""
    stage = "train_graph"
    modules = [path.removesuffix(".py").replace("/", ".") for path in (f"prefgen/stages/{stage}.py", RUNNER)]
    loaded = set(run([sys.executable, "-c", LOADED, *modules], ROOT).stdout.split())
    assert f"prefgen/stages/{stage}.py" in loaded
    assert loaded <= set(stage_code_deps(stage, ROOT))


def dvc_status(repo: Path) -> dict:
    return json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], repo, activate=True).stdout)


def touched_status(repo: Path, module: str) -> dict:
    """`dvc status` after a comment is appended to `module`; the module is restored after."""
    path = repo / module
    original = path.read_bytes()
    path.write_bytes(original + b"\n# touched\n")
    try:
        return dvc_status(repo)
    finally:
        path.write_bytes(original)


def shared_by_some(closures: dict[str, set[str]], folder: str) -> str:
    """The module under `folder` that the most stages import, short of all of them (a plain module before a package
    __init__): several stages must go stale and others not."""
    held = {path: sum(path in files for files in closures.values()) for files in closures.values() for path in files}
    candidates = sorted((-count, path.endswith("__init__.py"), path) for path, count in held.items()
                        if path.startswith(folder) and count < len(closures))
    assert candidates, f"no module under {folder} is imported by some stages but not all"
    return candidates[0][2]


@pytest.mark.slow
def test_editing_a_module_makes_exactly_the_stages_that_import_it_stale(trained_project):
    """On the trained project: a comment added to a Step 1 and to a Step 3 module makes `dvc status` report exactly the
    stages whose derived closure holds that file, with that file as their changed dep; the CLI is no stage's code."""
    project, _ = trained_project
    assert dvc_status(project) == {}
    assert check(project) == []  # else the stale stages below would follow a hand-written list, not the code
    closures = {stage: set(stage_code_deps(stage, project)) for stage in stage_order(project)}
    for folder in ("prefgen/preference/", "prefgen/generation/"):
        module = shared_by_some(closures, folder)
        stale = touched_status(project, module)
        assert set(stale) == {stage for stage, files in closures.items() if module in files}, module
        assert all(changes == [{"changed deps": {module: "modified"}}] for changes in stale.values()), stale
    assert not any("prefgen/cli.py" in files for files in closures.values())
    assert touched_status(project, "prefgen/cli.py") == {}
    assert dvc_status(project) == {}

