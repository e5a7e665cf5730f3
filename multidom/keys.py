"""Config errors and key checking shared by every layer that reads a config section (no dependencies).

``ConfigError`` is a user-fixable problem printed by the CLI as one line; :func:`check_keys` refuses
an unknown key with the closest valid name, or with the new name when the key was renamed.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

__all__ = ["ConfigError", "check_keys", "unknown_key_message", "read_text", "RENAMED"]


class ConfigError(ValueError):
    """A user-fixable problem in a config file or an override (one line, printed without traceback)."""


#: Keys of the 0.1 configs -> what replaced them (``section.key`` or ``key``); checked before "unknown key".
RENAMED: dict[str, str] = {
    "training.estimator": "dominance.estimator",
    "training.cost": "dominance.cost",
    "training.cost_beta": "dominance.cost_gain",
    "training.margin": "dominance.margin",
    "training.reg": "dominance.options.reg",
    "training.tol": "dominance.options.tol",
    "training.max_iter": "dominance.options.max_iter",
    "training.n_directions": "dominance.options.n_directions",
    "training.directions": "dominance.options.directions",
    "training.estimator_kwargs": "dominance.options",
    "training.estimator_options": "dominance.options",
    "training.normalisation": "dominance.normalisation",
    "training.normalize": "dominance.normalisation",
    "training.rewards": "rewards (top level)",
    "training.attribute_names": "rewards (top level; names come from the bank or data.reward_columns)",
    "top-level.peft": "model.peft",
    "quickstart.model": "tiny_lm (the quickstart builds its own model; model: is a ModelSpec elsewhere)",
    "data.reward_models": "rewards (top level)",
    "evaluate.trust_remote_code": "models[i].trust_remote_code (per model)",
}
for _section in ("evaluate", "evaluation"):  # multidom evaluate, and the quickstart's evaluation section
    RENAMED.update({
        f"{_section}.estimators": "dominance (a list of specs or estimator names, one per estimator)",
        f"{_section}.estimator_options": "dominance (a list of specs, each with its options)",
        f"{_section}.cost": "dominance (each spec's cost)",
        f"{_section}.normalize": "dominance (each spec's normalisation)",
    })


def unknown_key_message(key: str, valid: Iterable[str], section: str | None = None) -> str:
    """``unknown key 'k' in <section> section; did you mean 'x'?`` (or the list of valid keys)."""
    renamed = RENAMED.get(f"{section or 'top-level'}.{key}")
    if renamed is not None:
        where = f"{section}.{key}" if section and section != "top-level" else key
        return f"{where} was renamed in multidom 0.2: use {renamed}"
    valid = sorted(valid)
    where = f" in {section} section" if section else ""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}{where}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}{where}; valid keys: {', '.join(valid)}"


def check_keys(mapping: Mapping[str, Any], valid: Iterable[str], section: str | None = None) -> None:
    """Raise :class:`ConfigError` for the first key of ``mapping`` not in ``valid``."""
    valid = set(valid)
    for key in mapping:
        if key not in valid:
            raise ConfigError(unknown_key_message(str(key), valid, section))


def read_text(path: Any, what: str) -> str:
    """The UTF-8 text of a user's file, or a one-line :class:`ConfigError` naming the file (not UTF-8)."""
    from pathlib import Path

    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
