"""The ``dominance`` field every trainer config carries: a :class:`~multidom.core.spec.DominanceSpec`."""
from __future__ import annotations

from typing import Any

__all__ = ["WithDominanceSpec"]


class WithDominanceSpec:
    """Mixin for a ``TrainingArguments`` subclass with a ``dominance`` spec field: ``to_dict`` (what
    wandb and ``multidom_run.json`` record) writes the spec as its YAML mapping."""

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()  # type: ignore[misc]
        out["dominance"] = self.dominance.to_dict()  # type: ignore[attr-defined]
        return out
