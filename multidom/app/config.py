"""YAML configs for the CLI: safe loading, ``a.b=c`` overrides, unknown keys answered with suggestions.

A config file is a YAML mapping read with a :class:`yaml.SafeLoader` (DESIGN.md §7: no arbitrary
objects; ``1e-5`` is a float as in YAML 1.2). Command-line overrides ``key.sub=value`` set nested entries; the value is parsed as a
YAML scalar or flow collection (``lr=1e-5`` is a float, ``names=[a, b]`` a list, ``x=null`` None).
Typed sections are built by :func:`from_mapping`, which refuses unknown keys with the nearest
valid name (``unknown key 'lerning_rate' in training section; did you mean 'learning_rate'?``).
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

import yaml

from multidom.keys import ConfigError, check_keys, read_text, unknown_key_message

__all__ = [
    "ConfigError",
    "load_yaml",
    "apply_overrides",
    "load_config",
    "check_keys",
    "unknown_key_message",
    "from_mapping",
    "check_types",
]

T = TypeVar("T")


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python objects) that also reads ``1e-5`` as a float, as YAML 1.2 does
    (PyYAML's YAML 1.1 resolver wants ``1.0e-5`` and would hand a learning rate over as a string)."""


_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")  # exponent forms
_SafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 (a SafeLoader subclass)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; a missing file or a non-mapping is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        data = _safe_load(read_text(p, "config file"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"config file {p} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at top level, got {type(data).__name__}")
    return data


def _parse_value(text: str) -> Any:
    try:
        return _safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with each ``dotted.key=value`` override applied.

    Intermediate mappings are created when missing; an intermediate that exists but is not a
    mapping is an error (``training.lr.x=1`` when ``training.lr`` is a number). List items are
    addressed by their index (``rewards.0.model=path``).
    """
    out = _deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. training.learning_rate=1e-5)")
        parts = key.strip().split(".")
        if any(not p for p in parts):
            raise ConfigError(f"override key {key!r} has an empty component")
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[: depth + 1]), create=True)
        _set(node, parts[-1], _parse_value(raw), key)
    return out


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def _child(node: Any, part: str, path: str, create: bool) -> Any:
    if isinstance(node, list):
        idx = _index(node, part, path)
        return node[idx]
    if not isinstance(node, dict):
        raise ConfigError(f"cannot set below {path!r}: it is a {type(node).__name__}, not a mapping")
    if part not in node or node[part] is None:
        if not create:
            raise ConfigError(f"no key {path!r}")
        node[part] = {}
    child = node[part]
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"cannot set below {path!r}: it is a {type(child).__name__}, not a mapping")
    return child


def _index(node: list, part: str, path: str) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise ConfigError(f"{path!r} addresses a list; use an integer index") from None
    if not -len(node) <= idx < len(node):
        raise ConfigError(f"index {idx} out of range in {path!r} (list of {len(node)})")
    return idx


def _set(node: Any, part: str, value: Any, path: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, path)] = value
    else:
        node[part] = value


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`load_yaml` then :func:`apply_overrides`."""
    return apply_overrides(load_yaml(path), overrides)


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` fits the annotation ``hint``; ``None`` when the hint is not a simple scalar type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_accepts(h, value) for h in typing.get_args(hint)]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if hint is type(None):
        return value is None
    if hint is typing.Any or hint not in _SCALARS:
        return None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def _expected(hint: Any) -> str:
    args = [h for h in (typing.get_args(hint) or (hint,)) if h is not type(None)]
    words = [_SCALARS.get(h, getattr(h, "__name__", str(h))) for h in args]
    return " or ".join(words) + (" (or null)" if type(None) in typing.get_args(hint) else "")


def check_types(cls: type, mapping: Mapping[str, Any], section: str) -> None:
    """One-line :class:`ConfigError` when a value does not fit its field's scalar annotation
    (``training.learning_rate must be a number, got 'fast'``); other annotations are left to ``cls``."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved here: nothing to check against
        return
    for key, value in mapping.items():
        hint = hints.get(key)
        if hint is not None and _accepts(hint, value) is False:
            raise ConfigError(f"{section}.{key} must be {_expected(hint)}, got {value!r}")


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, section: str | None = None) -> T:
    """Build dataclass ``cls`` from ``mapping``, refusing unknown keys with a suggestion."""
    if mapping is not None and not isinstance(mapping, Mapping):
        raise ConfigError(f"{section or 'config'} section must be a mapping, got {type(mapping).__name__}")
    mapping = dict(mapping or {})
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    check_keys(mapping, names, section)
    check_types(cls, mapping, section or cls.__name__)
    try:
        return cls(**mapping)
    except (TypeError, ValueError) as exc:  # a required field is missing, a range check failed
        raise ConfigError(f"{section or cls.__name__} section: {str(exc).splitlines()[0]}") from None
