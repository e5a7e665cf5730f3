"""One typed dominance spec, from YAML (or Python) to the solver (DESIGN.md §1-2).

A :class:`DominanceSpec` holds everything that defines ``D(P ≽ Q)`` for a run: the estimator, the
violation cost ``h`` with its gain and margin, the estimator's options and the per-attribute
normalisation applied before the clouds are compared. It is validated once, when it is built, and
then travels unchanged: every trainer, objective and evaluation calls :meth:`DominanceSpec.violation`
(or ``multidom.violation(p, q, **spec.violation_kwargs())``). Option defaults are never filled in
here: they live in one place, the solver's signature (``multidom.core.sinkhorn.sinkhorn_estimator``)
or the estimator table (:data:`multidom.core.estimators.ESTIMATORS`).

YAML (the ``dominance:`` section of every config)::

    dominance:
      estimator: sinkhorn        # exact | quantile | sliced | sinkhorn
      cost: logistic             # hinge | squared_hinge | logistic | least_squares
      cost_gain: 1.0             # the cost's gain g (logistic only); never called beta
      margin: 0.0                # m >= 0 inside h(t + m)
      options: {reg: 0.1}        # the estimator's options (unknown names are an error)
      normalisation: zscore      # zscore | cdf | none, fitted on the negative (baseline) cloud
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from multidom.core.api import ratio_from_value, solve, violation, violation_ratio
from multidom.core.costs import get_cost
from multidom.core.estimators import ESTIMATORS, resolve_options
from multidom.core.normalize import NORMALISATIONS

__all__ = ["DominanceSpec", "RENAMED_KEYS"]

#: Keys of the first version's configs and the spec field that replaced them (one-line errors).
RENAMED_KEYS: dict[str, str] = {
    "beta": "cost_gain (beta is the KL strength / DPO temperature of the trainer)",
    "cost_beta": "dominance.cost_gain",
    "estimator_kwargs": "dominance.options",
    "estimator_options": "dominance.options",
    "normalize": "dominance.normalisation",
    "reg": "dominance.options.reg",
    "tol": "dominance.options.tol",
    "max_iter": "dominance.options.max_iter",
    "n_directions": "dominance.options.n_directions",
    "directions": "dominance.options.directions",
}


def _suggest(value: str, valid: Any) -> str:
    close = difflib.get_close_matches(str(value), list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class DominanceSpec:
    """What ``D(P ≽ Q)`` means for a run; validated on construction (``ValueError``, one line).

    Attributes:
        estimator: a key of :data:`multidom.core.estimators.ESTIMATORS`.
        cost: a key of :data:`multidom.core.costs.COSTS`.
        cost_gain: the cost's gain ``g > 0`` (``logistic``: ``h(t) = log(1 + exp(g (t + m)))``).
        margin: ``m >= 0``.
        options: the estimator's options (``reg``, ``tol``, ``n_directions``, ...); names the
            estimator does not take are refused. Defaults are the solver's, not set here.
        normalisation: per-attribute monotone map fitted on the negative cloud before solving
            (:data:`multidom.core.normalize.NORMALISATIONS`).
    """

    estimator: str = "sinkhorn"
    cost: str = "hinge"
    cost_gain: float = 1.0
    margin: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    normalisation: str = "zscore"

    def __post_init__(self) -> None:
        if not isinstance(self.estimator, str) or self.estimator not in ESTIMATORS:
            raise ValueError(f"dominance.estimator: unknown estimator {self.estimator!r}"
                             f"{_suggest(self.estimator, ESTIMATORS)} (valid: {', '.join(ESTIMATORS)})")
        try:
            get_cost(self.cost, gain=self.cost_gain, margin=self.margin)
        except ValueError as exc:
            raise ValueError(f"dominance: {exc}") from None
        if not isinstance(self.options, Mapping):
            raise ValueError(f"dominance.options must be a mapping of estimator options, got {self.options!r}")
        try:
            resolve_options(self.estimator, self.options)
        except ValueError as exc:
            raise ValueError(f"dominance.options: {exc}") from None
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"dominance.normalisation: unknown normalisation {self.normalisation!r}"
                             f"{_suggest(self.normalisation, NORMALISATIONS)} (valid: {', '.join(NORMALISATIONS)})")
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "cost_gain", float(self.cost_gain))
        object.__setattr__(self, "margin", float(self.margin))

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | DominanceSpec | None, section: str = "dominance",
                     **defaults: Any) -> DominanceSpec:
        """Build from a YAML mapping; unknown keys are an error naming the new key or the closest one.

        ``defaults`` are a trainer's own defaults (e.g. AOT's ``estimator="quantile"``), overridden by
        the mapping.
        """
        if isinstance(mapping, DominanceSpec):
            return mapping
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{section} must be a mapping (estimator, cost, cost_gain, margin, options, "
                             f"normalisation), got {type(mapping).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in mapping:
            if key in names:
                continue
            if key in RENAMED_KEYS:
                raise ValueError(f"{section}.{key} was renamed: use {RENAMED_KEYS[key]}")
            raise ValueError(f"unknown key {key!r} in {section} section{_suggest(key, names)} "
                             f"(valid: {', '.join(names)})")
        return cls(**{**defaults, **mapping})

    def replace(self, **changes: Any) -> DominanceSpec:
        """A copy with ``changes`` applied (and validated); ``options`` are replaced, not merged."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (JSON-able)."""
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v)
                for f in dataclasses.fields(self)}

    # ---- the solver ----------------------------------------------------------------------------
    def violation_kwargs(self, **option_overrides: Any) -> dict[str, Any]:
        """Keyword arguments of :func:`multidom.violation` (estimator, cost, cost_gain, margin, options)."""
        options = {**self.options, **option_overrides}
        return dict(estimator=self.estimator, cost=self.cost, cost_gain=self.cost_gain, margin=self.margin,
                    **options)

    def violation(self, positive: Any, negative: Any, **option_overrides: Any) -> torch.Tensor:
        """``D(P ≽ Q)`` of the batch shape (:func:`multidom.violation`)."""
        return violation(positive, negative, **self.violation_kwargs(**option_overrides))

    def violation_ratio(self, positive: Any, negative: Any, **option_overrides: Any) -> torch.Tensor:
        """``eps(P ≽ Q)`` of the batch shape (:func:`multidom.violation_ratio`)."""
        return violation_ratio(positive, negative, **self.violation_kwargs(**option_overrides))

    def solve(self, positive: Any, negative: Any, **option_overrides: Any):
        """Value, transport part, plan and potentials (:func:`multidom.solve`)."""
        return solve(positive, negative, **self.violation_kwargs(**option_overrides))

    def ratio_from_value(self, value: torch.Tensor, positive: Any, negative: Any,
                         **option_overrides: Any) -> torch.Tensor | None:
        """``eps(P ≽ Q)`` from an already solved ``value`` (:func:`multidom.core.api.ratio_from_value`)."""
        return ratio_from_value(value, positive, negative, **self.violation_kwargs(**option_overrides))
