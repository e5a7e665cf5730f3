"""Convex violation costs ``h`` and the separable cost ``c_h(x, y) = sum_k h(y_k - x_k)``.

DESIGN.md §1. ``t = y_k - x_k`` is how much the dominated point ``y`` beats the dominating point
``x`` on attribute ``k``; every ``h`` is convex and non-decreasing (except ``least_squares``).

=================  ==================================  ===========================================
name               ``h(t)``                            notes
=================  ==================================  ===========================================
``hinge``          ``max(t + m, 0)``                   ``D = 0`` iff dominance (m = 0, no reg.)
``squared_hinge``  ``max(t + m, 0) ** 2``              1-D ratio = del Barrio's ``eps_W2`` (m = 0)
``logistic``       ``log(1 + exp(g * (t + m)))``       AOT (arXiv 2406.05882, eq. 9): with
                                                       ``t = v - u`` it is ``-logsigmoid(g(u-v))``
``least_squares``  ``(t + m) ** 2``                    IPO-like; **not** a relaxation of dominance:
                                                       it penalises winning by more than ``m`` too
=================  ==================================  ===========================================

``margin`` (``m >= 0``) applies to every cost; the gain ``g > 0`` only to ``logistic``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["Cost", "COSTS", "get_cost", "cost_matrix"]


@dataclass(frozen=True)
class Cost:
    """A violation cost ``h`` with its hyperparameters bound.

    Attributes:
        name: key in :data:`COSTS`.
        gain: ``g > 0`` (``logistic`` only; ignored elsewhere).
        margin: ``m >= 0``, added to ``t`` before ``h``.
    """

    name: str
    gain: float = 1.0
    margin: float = 0.0

    def h(self, t: torch.Tensor) -> torch.Tensor:
        """Elementwise ``h(t)``, any shape; float32-safe (``softplus``, never ``log1p(exp)``)."""
        return _H[self.name](t, self.gain, self.margin)

    @property
    def tie_slope(self) -> float | None:
        """``k`` with ``h(t) - h(-t) = k t`` for all ``t``, or ``None`` when no such ``k`` exists.

        When it exists, ``D(Q, P) = D(P, Q) + k (mean_P sum_k x_k - mean_Q sum_k y_k)`` (entropic
        or not), so one solve gives both violations (DESIGN.md §1). True for ``hinge`` (k = 1)
        and ``logistic`` (k = gain) with zero margin only.
        """
        if self.margin != 0.0:
            return None
        return {"hinge": 1.0, "logistic": self.gain}.get(self.name)


def _hinge(t: torch.Tensor, g: float, m: float) -> torch.Tensor:
    return torch.clamp(t + m, min=0.0)


def _squared_hinge(t: torch.Tensor, g: float, m: float) -> torch.Tensor:
    return torch.clamp(t + m, min=0.0).square()


def _logistic(t: torch.Tensor, g: float, m: float) -> torch.Tensor:
    return F.softplus(g * (t + m))


def _least_squares(t: torch.Tensor, g: float, m: float) -> torch.Tensor:
    return (t + m).square()


_H: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "hinge": _hinge,
    "squared_hinge": _squared_hinge,
    "logistic": _logistic,
    "least_squares": _least_squares,
}
COSTS: tuple[str, ...] = tuple(_H)


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def get_cost(name: str | Cost, *, gain: float = 1.0, margin: float = 0.0) -> Cost:
    """Validate and bind a cost: ``get_cost("logistic", gain=0.1)``.

    Raises:
        ValueError: unknown name (valid names listed, closest first), a gain that is not a finite
            number ``> 0``, a margin that is not a finite number ``>= 0``.
    """
    if isinstance(name, Cost):
        return name
    if name not in _H:
        import difflib

        close = difflib.get_close_matches(str(name), COSTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown cost {name!r}{hint} (valid costs: {', '.join(COSTS)})")
    gain, margin = _real(gain, "cost_gain"), _real(margin, "margin")
    if not (gain > 0.0 and gain < float("inf")):
        raise ValueError(f"cost_gain must be a finite number > 0, got {gain}")
    if not (margin >= 0.0 and margin < float("inf")):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    return Cost(name, gain, margin)


def cost_matrix(x: torch.Tensor, y: torch.Tensor, cost: Cost) -> torch.Tensor:
    """Separable cost matrix ``C_ij = sum_k h(y_jk - x_ik)``.

    Args:
        x: ``(..., n, d)`` dominating (positive) points.
        y: ``(..., m, d)`` dominated (negative) points.
    Returns:
        ``(..., n, m)``. Built one attribute at a time, so peak memory is ``O(n m)``, not ``O(n m d)``.
    """
    out = cost.h(y[..., None, :, 0] - x[..., :, None, 0])
    for k in range(1, x.shape[-1]):
        out = out + cost.h(y[..., None, :, k] - x[..., :, None, k])
    return out
