"""The reward-model registry: names -> factories (STYLE.md §4, DESIGN.md §4 and §7).

* Built-ins register with ``@register("name", description=...)`` on a class or a function returning a
  :class:`~reward_models.base.RewardModel`.
* Third-party packages register through the entry-point group ``multidom.reward_models``::

      [project.entry-points."multidom.reward_models"]
      my_reward = "my_package.rewards:MyReward"

  Entry points are loaded lazily (the first time a name is not found, and by :func:`available`). A plug-in
  that fails to load is reported by name (a warning, and in the error for that name); the built-ins keep
  working. A plug-in cannot replace a built-in: that is reported the same way.
* Unknown names fail with the close matches (``difflib``); a second registration of a name fails unless
  ``replace=True``.
* :func:`create` builds a model from a name or a YAML-friendly mapping ``{type: name, **params}``.
"""
from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from reward_models.base import RewardModel

ENTRY_POINT_GROUP = "multidom.reward_models"

__all__ = ["ENTRY_POINT_GROUP", "register", "create", "available", "get_factory", "plugin_errors"]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., RewardModel]
    description: str
    source: str  # "builtin" or "plugin <distribution>"


_REGISTRY: dict[str, _Entry] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_SEEN_ENTRY_POINTS: set[tuple[str, str]] = set()


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def register(
    name: str, *, description: str | None = None, replace: bool = False
) -> Callable[[Callable[..., RewardModel]], Callable[..., RewardModel]]:
    """Decorator registering a reward-model factory under ``name``.

    Args:
        name: the ``type`` a config uses; must be unused unless ``replace=True``.
        description: one line for ``multidom rewards list`` (default: the factory's docstring's first line).
        replace: allow overriding an existing name (never done silently).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reward-model name must be a non-empty string, got {name!r}")

    def decorator(factory: Callable[..., RewardModel]) -> Callable[..., RewardModel]:
        _add(name, factory, description, "builtin", replace)
        return factory

    return decorator


def _add(name: str, factory: Callable[..., RewardModel], description: str | None, source: str, replace: bool) -> None:
    if not callable(factory):
        raise TypeError(f"reward model {name!r}: the factory must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not replace:
        raise ValueError(
            f"reward model {name!r} is already registered ({_REGISTRY[name].source}); "
            "pass replace=True to override it explicitly"
        )
    _REGISTRY[name] = _Entry(factory, description if description is not None else _first_line(factory), source)


def _load_plugins() -> None:
    """Register every not-yet-seen entry point of the group; record (and warn about) the ones that fail."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", None) or "unknown distribution"
        key = (ep.name, ep.value)
        if key in _SEEN_ENTRY_POINTS:
            continue
        _SEEN_ENTRY_POINTS.add(key)
        try:
            factory = ep.load()
            if ep.name in _REGISTRY:
                raise ValueError(f"name already registered ({_REGISTRY[ep.name].source}); plug-ins cannot replace it")
            _add(ep.name, factory, getattr(factory, "description", None) or None, f"plugin {dist}", False)
        except Exception as err:  # a broken plug-in must not break the built-ins
            msg = f"{type(err).__name__}: {err}"
            _PLUGIN_ERRORS[ep.name] = f"{dist} ({ep.value}): {msg}"
            warnings.warn(
                f"multidom reward plug-in {ep.name!r} from {dist} ({ep.value}) failed to load: {msg}",
                RuntimeWarning,
                stacklevel=3,
            )


def plugin_errors() -> dict[str, str]:
    """Plug-ins (entry-point name -> reason) that failed to load so far."""
    _load_plugins()
    return dict(_PLUGIN_ERRORS)


def available() -> dict[str, str]:
    """Every registered reward model (built-ins and loaded plug-ins): name -> one-line description."""
    _load_plugins()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def get_factory(name: str) -> Callable[..., RewardModel]:
    """The factory registered as ``name``; unknown names raise ``ValueError`` with close matches."""
    if name not in _REGISTRY:
        _load_plugins()
    if name in _REGISTRY:
        return _REGISTRY[name].factory
    if name in _PLUGIN_ERRORS:
        raise ValueError(f"reward model {name!r} is a plug-in that failed to load: {_PLUGIN_ERRORS[name]}")
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown reward model {name!r}{hint} (available: {', '.join(sorted(_REGISTRY))})")


def _plain(exc: BaseException) -> bool:
    """Whether ``exc`` can be re-raised as ``type(exc)(message)`` (its type takes one message argument)."""
    try:
        type(exc)("x")
    except Exception:
        return False
    return "reward model" not in str(exc)


def create(spec: str | Mapping[str, Any] | RewardModel, **params: Any) -> RewardModel:
    """Build a reward model from a name or a mapping ``{"type": name, **params}`` (YAML-friendly).

    ``params`` are merged over the mapping's. Examples::

        create("sentiment")
        create({"type": "hf_classifier", "model": "/models/rm", "head": 0})
        create("length", unit="words", target=200, name="length_200")
    """
    if isinstance(spec, RewardModel):
        if params:
            raise ValueError(f"create({spec.name!r}): parameters given for an already-built reward model")
        return spec
    if isinstance(spec, str):
        kind, kwargs = spec, dict(params)
    elif isinstance(spec, Mapping):
        if "type" not in spec:
            raise ValueError(f"a reward-model spec needs a 'type' key, got keys {sorted(spec)}")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        kwargs.update(params)
        kind = spec["type"]
    else:
        raise ValueError(f"a reward-model spec must be a name or a mapping with 'type', got {type(spec).__name__}")
    if not isinstance(kind, str):
        raise ValueError(f"a reward-model 'type' must be a string, got {kind!r}")
    factory = get_factory(kind)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
        raise ValueError(f"reward model {kind!r}: {err} (accepted parameters: {', '.join(accepted)})") from None
    except ValueError:  # builtins without a signature: let the call report
        pass
    try:
        model = factory(**kwargs)
    except Exception as exc:  # a plug-in (or a built-in's dependency) failing: say which reward model it was
        raise type(exc)(f"reward model {kind!r} could not be built: {exc}") if _plain(exc) else exc from exc
    if not callable(model):
        raise TypeError(f"reward model {kind!r}: the factory returned a non-callable {type(model).__name__}")
    return model
