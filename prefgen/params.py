"""Reading params.yaml into typed configs: strict YAML, type and range checks, unknown keys, and profiles.

Kept apart from the config classes (prefgen/config.py, prefgen/generation/config.py)
so that both can build on it without importing each other.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml

DEFAULT_PARAMS = Path("params.yaml")

T = TypeVar("T")


class ConfigError(ValueError):
    """params.yaml (or a section of it) does not match the typed config."""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range a numeric config field must lie in, checked whenever a section is read."""

    low: float
    high: float = float("inf")
    low_open: bool = False  # True: `low` itself is refused (a learning rate of 0 learns nothing)

    def check(self, value: float, where: str) -> None:
        above_low = value > self.low if self.low_open else value >= self.low
        if not (math.isfinite(value) and above_low and value <= self.high):  # NaN fails every comparison
            raise ConfigError(f"{where}: {value!r} is out of range; it must be {self}")

    def __str__(self) -> str:
        low = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        return low if self.high == float("inf") else f"{low} and <= {self.high:g}"


# Field annotations for the config dataclasses: `epochs: PositiveInt = 8` refuses 0 and -3 from params.yaml.
PositiveInt = Annotated[int, Bounds(1)]
NonNegativeInt = Annotated[int, Bounds(0)]
PositiveFloat = Annotated[float, Bounds(0, low_open=True)]
NonNegativeFloat = Annotated[float, Bounds(0)]
Fraction = Annotated[float, Bounds(0, 1)]


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (safe_load keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # PyYAML's own construct_mapping refuses it, naming the line
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's content; invalid YAML and duplicate keys are ConfigErrors naming the file and line."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    params = read_yaml(path) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: top level must be a mapping of stage sections")
    return params


def check_sections(params: dict[str, Any], known: typing.Collection[str], name: str) -> None:
    """Refuse a params top-level key that is no section (a misspelling), and a missing section `name`."""
    unknown = sorted(set(params) - set(known) - {*TOP_LEVEL_KEYS, PATHS_KEY, CODE_KEY}, key=str)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {sorted(known)}"
        raise ConfigError(f"params: unknown section '{unknown[0]}'{hint}")
    if name not in params:
        raise ConfigError(f"params: the '{name}' section is missing (every stage reads its own; see the shipped params.yaml)")


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *marks = typing.get_args(annotation)
        value = _check_type(value, base, where)
        for mark in marks:
            if isinstance(mark, Bounds):
                mark.check(value, where)
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check_type(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = [_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(annotation))}")
        return value
    if dataclasses.is_dataclass(annotation):  # a nested section, e.g. one entry of registry.gate_metrics
        return from_section(annotation, value, where.removeprefix("params."))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_section(cls: type[T], section: dict[str, Any] | None, name: str) -> T:
    """Build dataclass `cls` from params section `name`, checking keys, types and ranges."""
    if not isinstance(section, dict):
        raise ConfigError(f"params.{name}: expected a mapping, got {section!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(f"params.{name}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for key, field in fields.items():
        if key in section:
            kwargs[key] = _check_type(section[key], hints[key], f"params.{name}.{key}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"params.{name}: missing required key '{key}'")
    return cls(**kwargs)


PROFILE_KEY = "profile"  # top-level params.yaml key naming the active profile of profiled sections
PATHS_KEY = "paths"  # top-level params.yaml key of the catalogue of paths (prefgen/paths.py), no stage's section
IMAGE_SIZE_KEY = "image_size"  # top-level params.yaml key: the models' image side, one value for every stage that reads images
TOP_LEVEL_KEYS = (PROFILE_KEY, IMAGE_SIZE_KEY)  # top-level scalars that dvc.yaml lists beside a stage's sections
# Top-level key of a pipeline folder's code fingerprint ({stage: sha256 of its code}, prefgen/pipeline_folder/): no
# stage's config, but a param its dvc.yaml stage lists, so a changed prefgen reruns the stages whose code changed.
CODE_KEY = "code"
_TOP_LEVEL = "top_level"


def top_level(default: Any) -> Any:
    """A config field set once for every stage by the top-level params.yaml key of its name, never in a section:
    stages that must agree (the image store and each model reading it) cannot then disagree."""
    return dataclasses.field(default=default, metadata={_TOP_LEVEL: True})


def section(params: dict[str, Any] | None, cls: type[T], name: str) -> T:
    """Config `cls` from section `name` of `params`, its active profile merged in; None (no params file) gives the defaults."""
    if params is None:
        return cls()
    if name not in params:
        raise ConfigError(f"params: the '{name}' section is missing (every stage reads its own; see the shipped params.yaml)")
    return from_section(cls, resolve_section(params, cls, name), name)


def resolve_section(params: dict[str, Any], cls: type, name: str) -> dict[str, Any] | None:
    """Section `name` with its active profile merged in and the top-level keys its config takes (`top_level` fields)."""
    resolved = resolve_profile(params, name)
    for field in dataclasses.fields(cls):
        if not field.metadata.get(_TOP_LEVEL):
            continue
        if isinstance(resolved, dict) and field.name in resolved:
            raise ConfigError(f"params.{name}.{field.name}: set it once, as the top-level `{field.name}` every stage reads")
        if field.name in params:
            resolved = (resolved if isinstance(resolved, dict) else {}) | {field.name: params[field.name]}
    return resolved


def resolve_profile(params: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Section `name` with its `profiles[<active profile>]` merged over the shared keys.

    A profiled section holds the keys both profiles share plus `profiles: {demo: {...},
    quality: {...}}`; the top-level `profile` key picks one. The result carries the
    chosen name as `profile`, so every run records which one it was.
    """
    section = params.get(name)
    if not isinstance(section, dict) or "profiles" not in section:
        return section
    profiles = section["profiles"]
    chosen = params.get(PROFILE_KEY, "demo")
    if not isinstance(profiles, dict) or chosen not in profiles:
        known = sorted(profiles) if isinstance(profiles, dict) else []
        raise ConfigError(f"params.{PROFILE_KEY} is {chosen!r} but params.{name}.profiles has {known}")
    shared = {k: v for k, v in section.items() if k != "profiles"}
    overlap = sorted(set(shared) & set(profiles[chosen] or {}))
    if overlap:
        raise ConfigError(f"params.{name}: {overlap} set both in the section and in profiles.{chosen}; set each once")
    return shared | (profiles[chosen] or {}) | {"profile": chosen}


def from_saved(cls: type[T], saved: dict[str, Any]) -> T:
    """Config `cls` from the copy a model folder or bundle saved; keys that are no field any more are dropped,
    since folders saved before the catalogue of paths (prefgen/paths.py) also recorded their stage's paths."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in saved.items() if k in names})
