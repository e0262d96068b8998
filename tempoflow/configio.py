"""Typed configuration from plain data: dataclasses built from nested dicts with every key and value
checked (``from_dict``), dotted overrides (``train.steps=200``), YAML files. Schema-agnostic: the
experiment's schema is ``tempoflow.config``; each section's dataclass sits beside what it configures.

Every mistake is one ``ConfigError`` line naming the key, never a traceback.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tempoflow.errors import ConfigError
from tempoflow.files import write_text_atomic


def require(ok: bool, message: str) -> None:
    """Config validation in a dataclass's ``__post_init__``: a ValueError that ``from_dict`` turns into
    one ConfigError line."""
    if not ok:
        raise ValueError(message)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

# YAML 1.1 reads yes/no/on/off as booleans, so `train.mixed_precision=no` arrived as False. Configs are
# read with true/false alone as booleans; a bool setting still takes the four words (_coerce).
_BOOL = "tag:yaml.org,2002:bool"
_BOOL_WORDS = {"yes": True, "on": True, "no": False, "off": False}


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader with yes/no/on/off left as text."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml_text(text: str) -> Any:
    """YAML as ``yaml.safe_load`` reads it, except that yes/no/on/off stay strings (see ``_BOOL_WORDS``)."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples; raise on mismatch."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}' must be null, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config key '{key}' must have {len(args)} entries, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:  # YAML 1.1's other booleans
            return _BOOL_WORDS[value.lower()]
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):  # YAML 1.1 reads "5e-4" as a string
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the annotations used above exist in the configs
        raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{full}' (valid: {', '.join(sorted(fields))})")
        default = _field_default(fields[key])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # a partial section overrides the field's own default (e.g. flow.unet's small UNet),
            # not the section class's defaults
            value = {**to_dict(default), **value}
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid config '{prefix or cls.__name__}': {err}") from err


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples become lists) for YAML/JSON."""

    def convert(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.steps=200'`` -> (['train', 'steps'], 200); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = load_yaml_text(raw) if raw.strip() else raw  # blank: the text itself (YAML would read null)
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML") from err
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted overrides into a nested dict (a copy); type checks happen in ``from_dict``."""
    data = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def _deep_copy(d: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}



def read_yaml(path: Path) -> dict:
    """A YAML file holding a mapping (an empty file is ``{}``).

    Raises:
        ConfigError: invalid YAML (with its line) or not a mapping at the top level.
    """
    try:
        loaded = load_yaml_text(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from err
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded or {}


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML (atomically), in field order."""
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def flatten(tree: dict, sep: str = ".", prefix: str = "") -> dict:
    """``{"train": {"steps": 1}}`` -> ``{"train.steps": 1}`` (leaves only)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, sep, f"{prefix}{key}{sep}"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
