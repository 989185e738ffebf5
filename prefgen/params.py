"""Reading params.yaml into typed configs: type checks, unknown keys, and profiles.

Kept apart from the config classes (prefgen/config.py, prefgen/generation/config.py)
so that both can build on it without importing each other.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

DEFAULT_PARAMS = Path("params.yaml")

T = TypeVar("T")


class ConfigError(ValueError):
    """params.yaml (or a section of it) does not match the typed config."""


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: top level must be a mapping of stage sections")
    return params


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
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
    if dataclasses.is_dataclass(annotation):  # a nested section, e.g. one entry of registry.gate_metrics
        return from_section(annotation, value, where)
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
    """Build dataclass `cls` from params section `name`, checking keys and types."""
    section = section or {}
    if not isinstance(section, dict):
        raise ConfigError(f"params.{name}: expected a mapping, got {section!r}")
    hints = typing.get_type_hints(cls)
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
