"""Entropic optimal transport (Sinkhorn) for the joint violation ``D_{h,lambda}(P ≽ Q)``.

DESIGN.md §1-2; arXiv 2406.06425 (multivariate dominance via OT), arXiv 2406.05882 (AOT).

    D_{h,lambda}(P, Q) = min_pi <pi, C> + lambda * KL(pi || a ⊗ b),   C_ij = sum_k h(y_jk - x_ik)

Three interchangeable backends, chosen by name through :data:`BACKENDS`:

============  ============================================================================
``builtin``   log-domain PyTorch solver, batched over leading dims, tolerance stop,
              optional epsilon-scaling, envelope-theorem gradient (:mod:`multidom.core.sinkhorn.builtin`)
``pot``       POT's log-domain solver ``ot.bregman.sinkhorn_log`` (what ``ot.solve`` runs for
              KL-regularised OT), looped over the batch (:mod:`multidom.core.sinkhorn.pot_backend`)
``geomloss``  geomloss ``SamplesLoss("sinkhorn", cost=...)`` with side-tagged points so the
              asymmetric cost is oriented correctly; no tolerance stop, accuracy set by the
              annealing ratio (:mod:`multidom.core.sinkhorn.geomloss_backend`)
============  ============================================================================

Every backend returns the same :class:`multidom.core.clouds.ViolationResult`, with value and
gradients from :func:`multidom.core.sinkhorn.builtin.envelope_result` at its converged potentials, so
they differ only in how (and how accurately) those potentials are found.
"""
from __future__ import annotations

from typing import Callable

import torch

from multidom.core.clouds import ViolationResult
from multidom.core.costs import Cost
from multidom.core.sinkhorn import builtin, geomloss_backend, pot_backend

__all__ = ["BACKENDS", "sinkhorn_estimator"]

#: backend name -> solver with the signature of :func:`multidom.core.sinkhorn.builtin.solve`.
BACKENDS: dict[str, Callable[..., ViolationResult]] = {
    "builtin": builtin.solve,
    "pot": pot_backend.solve,
    "geomloss": geomloss_backend.solve,
}


def sinkhorn_estimator(
    x: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    b: torch.Tensor,
    cost: Cost,
    *,
    reg: float = 0.1,
    backend: str = "builtin",
    max_iter: int = 1000,
    tol: float = 1e-6,
    eps_scaling: float | None = None,
    return_plan: bool = False,
) -> ViolationResult:
    """Entropic violation of ``P = (x, a)`` over ``Q = (y, b)`` by Sinkhorn.

    Args:
        x: ``(..., n, d)`` positive (dominating) points.
        a: ``(..., n)`` positive weights, ``>= 0``, summing to one (validated by the caller).
        y: ``(..., m, d)`` negative (dominated) points.
        b: ``(..., m)`` negative weights, ``>= 0``, summing to one.
        cost: the violation cost ``h`` (:class:`multidom.core.costs.Cost`).
        reg: entropic ``lambda > 0`` (as named in POT).
        backend: a key of :data:`BACKENDS`.
        max_iter: cap on Sinkhorn iterations (one iteration = one ``f`` and one ``g`` update).
        tol: stop when the L1 marginal error ``sum_i |(pi 1)_i - a_i|`` drops below ``tol``.
        eps_scaling: ratio in ``(0, 1)`` of the annealing ``lambda_0 > lambda_1 > ... > reg``
            that starts at the cost range (one update per value); ``None`` (default) solves at
            ``reg`` directly. Off by default: on z-scored clouds at ``reg`` 0.01-0.1 it did not
            reduce the iteration count (benchmark notes); it can help at much smaller ``reg``.
            The geomloss backend always anneals (``None`` means its ratio 0.9).
        return_plan: also return the plan ``pi`` ``(..., n, m)``.

    Returns:
        :class:`multidom.core.clouds.ViolationResult` with ``value`` ``(...)`` (the entropic
        objective including ``reg * KL``), ``transport`` ``(...)`` = ``<pi, C>``, potentials
        ``f (..., n)``, ``g (..., m)`` and ``plan`` on request. ``value`` is differentiable in
        ``x, a, y, b`` by the envelope theorem (``d value / d a_i = f_i``, ``d value / d b_j = g_j``,
        ``d value / d C = pi``). ``transport`` is differentiable in the points with the plan held
        fixed (exact as ``reg -> 0``) and, like POT's envelope mode, not in the weights: use
        ``value`` when the weight gradient (the per-sample advantage) is wanted.

    Raises:
        ValueError: unknown backend (valid names listed), ``reg <= 0``, ``max_iter < 1``,
            ``tol <= 0``, ``eps_scaling`` outside ``(0, 1)``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown sinkhorn backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    for name, value in (("reg", reg), ("tol", tol), ("max_iter", max_iter)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    reg = float(reg)
    if not (reg > 0.0 and reg < float("inf")):
        raise ValueError(f"reg (entropic lambda) must be a finite number > 0, got {reg}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not float(tol) > 0.0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if eps_scaling is not None and (isinstance(eps_scaling, (bool, str)) or not 0.0 < float(eps_scaling) < 1.0):
        raise ValueError(f"eps_scaling must be in (0, 1) or None, got {eps_scaling}")
    return BACKENDS[backend](
        x, a, y, b, cost, reg=reg, max_iter=int(max_iter), tol=float(tol),
        eps_scaling=eps_scaling, return_plan=return_plan,
    )
