"""Each DVC stage's code dependencies, derived from the imports of its stage module.

A stage depends on every project file its module `prefgen/stages/<stage>.py` and the stage runner import, transitively
(imports inside functions included), with every package `__init__.py` on the way. `check` compares that closure with
the `prefgen/` entries of dvc.yaml's deps; `write` rewrites those entries and leaves every other byte of dvc.yaml alone.

    python -m prefgen.codedeps --check   # one line per stage whose listed code differs; exit 1 if any
    python -m prefgen.codedeps --write   # make dvc.yaml list the derived code
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import yaml

PACKAGE = "prefgen"
STAGES_DIR = f"{PACKAGE}/stages"
# The runner wraps every stage (MLflow run, metrics file); the stages' shared helpers are its home until it exists.
RUNNER = f"{STAGES_DIR}/runner.py"  # wraps every stage run: its MLflow run and metrics file
DVC_YAML = "dvc.yaml"


class CodeDepsError(Exception):
    """A stage's code cannot be derived: a missing stage module, an import of a missing module, an unreadable dvc.yaml."""


class Difference(NamedTuple):
    """One stage whose code deps in dvc.yaml differ from the derived ones: files not listed, files listed in vain."""

    stage: str
    missing: tuple[str, ...]
    extra: tuple[str, ...]


# --- the import closure ---------------------------------------------------------------------------------------------


def module_file(module: str, root: Path) -> str | None:
    """The repo-relative file that defines dotted `module` (a package's __init__.py or a module file, in Python's order
    of preference), None if none."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate.relative_to(root).as_posix()
    return None


def module_name(path: str) -> str:
    """The dotted module a repo-relative file defines: prefgen/a/b.py -> prefgen.a.b, prefgen/a/__init__.py -> prefgen.a."""
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_inits(module: str, root: Path) -> set[str]:
    """The __init__.py of every package above `module`: importing a module runs them all, outermost first."""
    parts = module.split(".")
    found = (module_file(".".join(parts[:depth]), root) for depth in range(1, len(parts)))
    return {path for path in found if path is not None}


def absolute_base(path: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` in file `path` names, relative levels (`from ..a import b`) resolved."""
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]  # a plain module's package is its parent; a package's __init__ is its own package
    if node.level - 1 >= len(package):
        raise CodeDepsError(f"{path}:{node.lineno}: relative import goes above the top-level package")
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def is_project(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def imported_modules(path: str, root: Path) -> list[tuple[str, int, bool]]:
    """(module, line, required) for every project import anywhere in file `path`; `required` is False for a
    `from pkg import name` candidate that may be a plain name rather than a submodule."""
    tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=path)
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, True) for alias in node.names if is_project(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = absolute_base(path, node)
            if is_project(base):
                found.append((base, node.lineno, True))
                found += [(f"{base}.{alias.name}", node.lineno, False) for alias in node.names if alias.name != "*"]
    return found


def direct_imports(path: str, root: Path) -> set[str]:
    """The project files that file `path` imports itself (the packages above them follow from module_closure)."""
    files: set[str] = set()
    for module, line, required in imported_modules(path, root):
        target = module_file(module, root)
        if target is None and required:
            raise CodeDepsError(f"{path}:{line} imports {module}, which is no module under {PACKAGE}/")
        if target is not None:
            files.add(target)
    return files


def module_closure(files: Iterable[str | Path], root: Path) -> set[str]:
    """Every project file (repo-relative POSIX path) that the given Python files import, transitively, with the given
    files themselves and every package __init__.py on the way; imports inside functions and `if` blocks count."""
    root = Path(root)
    todo = [Path(f).as_posix() for f in files]
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        if not (root / path).is_file():
            raise CodeDepsError(f"{path} is not a file")
        seen.add(path)
        todo += sorted((direct_imports(path, root) | package_inits(module_name(path), root)) - seen)
    return seen


def stage_code_deps(stage: str, root: Path) -> list[str]:
    """The sorted files stage `stage` runs: the closure of prefgen/stages/<stage>.py and the stage runner."""
    root = Path(root)
    module = f"{STAGES_DIR}/{stage}.py"
    if not re.fullmatch(r"\w+", stage) or not (root / module).is_file():
        raise CodeDepsError(f"stage {stage!r} has no module {module}")
    return sorted(module_closure([module, RUNNER], root))


# --- dvc.yaml -------------------------------------------------------------------------------------------------------


def is_code_dep(entry: object) -> bool:
    return isinstance(entry, str) and entry.startswith(PACKAGE + "/")


def listed_code(entries: Iterable[object], root: Path) -> set[str]:
    """The files a stage's code deps name; a directory entry names every .py under it."""
    files: set[str] = set()
    for entry in filter(is_code_dep, entries):
        path = root / str(entry).rstrip("/")
        if path.is_dir():
            files |= {p.relative_to(root).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts}
        else:
            files.add(str(entry))
    return files


def dvc_stages(root: Path) -> dict[str, dict]:
    """dvc.yaml's stages, as parsed (templating left unresolved)."""
    stages = (yaml.safe_load((root / DVC_YAML).read_text(encoding="utf-8")) or {}).get("stages") or {}
    if not isinstance(stages, dict):
        raise CodeDepsError(f"{DVC_YAML}: `stages` is not a mapping")
    return stages


def check(root: Path) -> list[Difference]:
    """Every stage whose code deps in dvc.yaml differ from the derived ones, in dvc.yaml's order."""
    root = Path(root)
    differences = []
    for stage, spec in dvc_stages(root).items():
        listed = listed_code(spec.get("deps") or [], root)
        derived = set(stage_code_deps(stage, root))
        if listed != derived:
            differences.append(Difference(stage, tuple(sorted(derived - listed)), tuple(sorted(listed - derived))))
    return differences


# --- rewriting dvc.yaml line by line (a YAML dump would lose comments, quoting and layout) ---------------------------


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def is_content(line: str) -> bool:
    """A line that holds YAML, not blank or only a comment."""
    return bool(line.strip()) and not line.lstrip().startswith("#")


def continues(line: str, indent: int) -> bool:
    """Whether `line` belongs to the value of a key at `indent`: deeper, or a `- item` level with the key (YAML allows it)."""
    return not is_content(line) or indent_of(line) > indent or (indent_of(line) == indent and line.lstrip().startswith("- "))


def block_end(lines: list[str], start: int, indent: int) -> int:
    """The index after the block that opens at `start`: its last line that continues it, comments and blank lines
    trailing it left out (they belong to what follows)."""
    end = last = start + 1
    while end < len(lines) and continues(lines[end], indent):
        if is_content(lines[end]):
            last = end + 1
        end += 1
    return last


def key_line(lines: list[str], start: int, stop: int, key: str, indent: int | None = None) -> int | None:
    """The index of the line `key:` among lines[start:stop] (at `indent` if given, else at the first key's indent)."""
    for index in range(start, stop):
        line = lines[index]
        if not is_content(line):
            continue
        indent = indent_of(line) if indent is None else indent
        if indent_of(line) == indent and re.match(rf"{re.escape(key)}\s*:(\s|$)", line.lstrip()):
            return index
    return None


def stage_blocks(lines: list[str]) -> dict[str, tuple[int, int]]:
    """Each stage's (first, end) line indices: the `name:` line and the index after its block."""
    top = key_line(lines, 0, len(lines), "stages", 0)
    if top is None:
        raise CodeDepsError(f"{DVC_YAML} has no `stages:` block")
    blocks = {}
    index, end = top + 1, block_end(lines, top, 0)
    while index < end:
        line = lines[index]
        if is_content(line):
            name = line.strip().split(":", 1)[0]
            blocks[name] = (index, block_end(lines, index, indent_of(line)))
            index = blocks[name][1]
        else:
            index += 1
    return blocks


def item_path(line: str) -> object:
    """The value of a `- item` line as YAML reads it (quotes and a trailing comment handled)."""
    parsed = yaml.safe_load(line.strip())
    return parsed[0] if isinstance(parsed, list) and len(parsed) == 1 else None


def rewritten_deps(items: list[str], derived: list[str], item_indent: int) -> list[str]:
    """A deps block's lines: data deps as they were, then one line per derived file (an existing line, comments
    above it included, is kept for a file still listed)."""
    data, code, pending = [], {}, []
    for line in items:
        if not is_content(line):
            pending.append(line)
            continue
        if indent_of(line) != item_indent or not line.lstrip().startswith("-"):
            raise CodeDepsError(f"{DVC_YAML}: cannot rewrite the deps line {line.rstrip()!r}")
        path = item_path(line)
        if is_code_dep(path):
            code[path] = pending + [line]
        else:
            data += pending + [line]
        pending = []
    new_code = [code.get(path, [f"{' ' * item_indent}- {path}\n"]) for path in derived]
    return data + [line for lines in new_code for line in lines] + pending


def rewrite_stage(lines: list[str], first: int, end: int, derived: list[str]) -> list[str]:
    """One stage's lines with its deps block rewritten (a deps block is added after `cmd` where there is none)."""
    deps = key_line(lines, first + 1, end, "deps")
    if deps is None:
        cmd = key_line(lines, first + 1, end, "cmd")
        at = block_end(lines, cmd, indent_of(lines[cmd])) if cmd is not None else end
        key_indent = indent_of(lines[cmd]) if cmd is not None else indent_of(lines[first]) + 2
        new = [f"{' ' * key_indent}deps:\n"] + [f"{' ' * (key_indent + 2)}- {path}\n" for path in derived]
        return lines[first:at] + new + lines[at:end]
    if lines[deps].split(":", 1)[1].split("#")[0].strip():
        raise CodeDepsError(f"{DVC_YAML}: the deps of {lines[first].strip()} are not a block list")
    stop = block_end(lines, deps, indent_of(lines[deps]))
    items = lines[deps + 1 : stop]
    item_indent = next((indent_of(line) for line in items if is_content(line)), indent_of(lines[deps]) + 2)
    return lines[first : deps + 1] + rewritten_deps(items, derived, item_indent) + lines[stop:end]


def rewritten(text: str, root: Path) -> str:
    """dvc.yaml's text with every stage's code deps replaced by the derived ones; every other line kept as it was."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    out, done = [], 0
    for stage, (first, end) in stage_blocks(lines).items():
        out += lines[done:first] + rewrite_stage(lines, first, end, stage_code_deps(stage, root))
        done = end
    return "".join(out + lines[done:])


def assert_only_code_changed(before: str, after: str, root: Path) -> None:
    """Refuse a rewrite that changed anything but the code deps (a layout this line editor misread)."""
    try:
        old, new = yaml.safe_load(before), yaml.safe_load(after)
    except yaml.YAMLError as error:
        raise CodeDepsError(f"rewriting {DVC_YAML} would make it invalid YAML; left it as it was:\n{error}") from error
    for stage, spec in old["stages"].items():
        data = [entry for entry in spec.get("deps") or [] if not is_code_dep(entry)]
        spec["deps"] = data + stage_code_deps(stage, root)
    if old != new:
        raise CodeDepsError(f"rewriting {DVC_YAML} would change more than its code deps; left it as it was")


def write(root: Path) -> bool:
    """Make dvc.yaml list every stage's derived code deps (sorted, after its data deps); True if the file changed."""
    root = Path(root)
    before = (root / DVC_YAML).read_text(encoding="utf-8")
    after = rewritten(before, root)
    assert_only_code_changed(before, after, root)
    if after == before:
        return False
    (root / DVC_YAML).write_text(after, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """Check or write the code deps of dvc.yaml in the current directory (the repository root, as for `dvc`)."""
    parser = argparse.ArgumentParser(prog="python -m prefgen.codedeps", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="list the stages whose code deps differ; exit 1 if any")
    action.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        if args.write:
            print(f"{DVC_YAML}: {'code deps rewritten' if write(root) else 'already up to date'}")
            return 0
        differences = check(root)
    except CodeDepsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for diff in differences:
        print(f"{diff.stage}: missing {', '.join(diff.missing) or '-'}; extra {', '.join(diff.extra) or '-'}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
