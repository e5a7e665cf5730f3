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

import warnings
from typing import Callable

import torch

from multidom.core.clouds import ViolationResult
from multidom.core.costs import Cost
from multidom.core.sinkhorn import builtin, geomloss_backend, pot_backend

__all__ = ["BACKENDS", "ON_UNCONVERGED", "SinkhornConvergenceWarning", "sinkhorn_estimator"]

#: what :func:`sinkhorn_estimator` does when the returned plan's marginal error is above ``tol``.
ON_UNCONVERGED: tuple[str, ...] = ("warn", "raise", "ignore")


class SinkhornConvergenceWarning(RuntimeWarning):
    """A Sinkhorn solve stopped with a marginal error above ``tol`` (the result is approximate)."""

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
    eps_scaling: float | str | None = "auto",
    return_plan: bool = False,
    on_unconverged: str = "warn",
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
            that starts at the cost range (one update per value); ``None`` solves at ``reg``
            directly; ``"auto"`` (default) anneals with ratio 0.9 only where small ``reg`` needs
            it, ``range(C) / reg > 2000`` (:func:`multidom.core.sinkhorn.builtin.eps_schedule`:
            on z-scored clouds at ``reg`` 0.01-0.1 annealing did not reduce the iteration count;
            at ``reg = 1e-3`` it cut the transport error of 1000 iterations from 28-50 % to 2-4 %).
            The geomloss backend always anneals (``None``/``"auto"``: its ratio 0.9); POT ignores it.
        return_plan: also return the plan ``pi`` ``(..., n, m)``.
        on_unconverged: when the returned plan's L1 marginal error is above ``tol`` in some batch
            entry (``max_iter`` reached; or geomloss's fixed schedule was not enough): ``"warn"``
            (default; a :class:`SinkhornConvergenceWarning` with the error), ``"raise"``
            (``RuntimeError``) or ``"ignore"``. An unconverged plan does not have the prescribed
            marginals, and its transport part can fall *below* the exact optimum.

    Returns:
        :class:`multidom.core.clouds.ViolationResult` with ``value`` ``(...)`` (the entropic
        objective including ``reg * KL``), ``transport`` ``(...)`` = ``<pi, C>``, potentials
        ``f (..., n)``, ``g (..., m)`` and ``plan`` on request. ``value`` is differentiable in
        ``x, a, y, b`` by the envelope theorem (``d value / d a_i = f_i``, ``d value / d b_j = g_j``,
        ``d value / d C = pi``). ``transport`` is differentiable in the points with the plan held
        fixed (exact as ``reg -> 0``) and, like POT's envelope mode, not in the weights: use
        ``value`` when the weight gradient (the per-sample advantage) is wanted.
        ``marginal_error`` ``(...)`` is each entry's L1 marginal error, ``iterations`` the
        iterations run at ``reg`` (builtin, pot).

    Raises:
        ValueError: unknown backend (valid names listed), ``reg <= 0``, ``max_iter < 1``,
            ``tol <= 0``, ``eps_scaling`` not in ``(0, 1)``/``None``/``"auto"``, unknown
            ``on_unconverged``.
        RuntimeError: unconverged with ``on_unconverged="raise"``.
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
    if eps_scaling is not None and eps_scaling != "auto" and (
        isinstance(eps_scaling, (bool, str)) or not 0.0 < float(eps_scaling) < 1.0
    ):
        raise ValueError(f"eps_scaling must be in (0, 1), None or 'auto', got {eps_scaling!r}")
    if on_unconverged not in ON_UNCONVERGED:
        raise ValueError(f"on_unconverged must be one of {', '.join(ON_UNCONVERGED)}, got {on_unconverged!r}")
    res = BACKENDS[backend](
        x, a, y, b, cost, reg=reg, max_iter=int(max_iter), tol=float(tol),
        eps_scaling=eps_scaling, return_plan=return_plan,
    )
    _check_converged(res, backend=backend, reg=reg, max_iter=int(max_iter), tol=float(tol), action=on_unconverged)
    return res


def _check_converged(res: ViolationResult, *, backend: str, reg: float, max_iter: int, tol: float,
                     action: str) -> None:
    """Warn or raise (``action``) when ``res.marginal_error`` exceeds ``tol`` in some batch entry."""
    if action == "ignore" or res.marginal_error is None:
        return
    err = res.marginal_error
    bad = ~(err <= tol)  # NaN counts as unconverged
    if not bool(bad.any()):
        return
    iters = "" if res.iterations is None else f" after {res.iterations} iterations"
    msg = (
        f"Sinkhorn ({backend}) did not converge{iters} at reg={reg:g}: L1 marginal error "
        f"{float(err.max()):.2e} > tol={tol:g} in {int(bad.sum())} of {err.numel()} problem(s); the value "
        f"and transport part are approximate (the transport part can fall below the exact optimum). "
        f"Raise max_iter (now {max_iter}), anneal (eps_scaling=0.9) or raise reg"
    )
    if action == "raise":
        raise RuntimeError(msg)
    warnings.warn(msg, SinkhornConvergenceWarning, stacklevel=4)
