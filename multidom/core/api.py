"""Public entry points: :func:`violation`, :func:`violation_ratio`, :func:`solve` (DESIGN.md §1–2).

A cloud is a tensor of points ``(..., n, d)`` (uniform weights) or a pair
``(points (..., n, d), weights (..., n))``; leading batch dimensions ``...`` must match between the
two clouds and are kept in the result. Weights are validated and normalised inside, so the gradient
with respect to raw weights is the centred Kantorovich potential of each sample.

Options by estimator (anything else is a ``ValueError`` listing the valid ones):

* ``exact``: ``return_plan``, ``num_iter_max``;
* ``quantile``: none;
* ``sliced``: ``n_directions`` (64), ``directions`` (``"random"`` | ``"qmc"``), ``seed``;
* ``sinkhorn``: ``reg`` (0.1, the entropic lambda as named in POT), ``backend``
  (``"builtin"`` | ``"pot"`` | ``"geomloss"``), ``max_iter``, ``tol``, ``eps_scaling`` (``"auto"``),
  ``return_plan``, ``on_unconverged`` (``"warn"`` | ``"raise"`` | ``"ignore"``).
"""
from __future__ import annotations

from typing import Any

import torch

from multidom.core.clouds import CloudLike, ViolationResult, check_pair
from multidom.core.costs import Cost, get_cost
from multidom.core.estimators import resolve_options, run

__all__ = ["solve", "violation", "violation_ratio", "ratio_from_value", "PARTS"]

PARTS: tuple[str, ...] = ("value", "transport")


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; valid parts: {', '.join(PARTS)}")


def solve(
    positive: CloudLike,
    negative: CloudLike,
    *,
    estimator: str = "sinkhorn",
    cost: str | Cost = "hinge",
    cost_gain: float = 1.0,
    margin: float = 0.0,
    **options: Any,
) -> ViolationResult:
    """Everything an estimator knows about ``D(P ≽ Q)``: value, transport part, plan, potentials.

    ``f: (..., n)``, ``g: (..., m)`` are the centred potentials (``sum_i a_i f_i = 0``, for every
    estimator): the gradient of the value with respect to the normalised weights along the
    simplex, i.e. how much each sample hurts dominance. Estimators without a dual (``quantile``,
    ``sliced``) get them by one extra backward pass; the value keeps its graph to the caller's
    points and weights.

    Raises:
        ValueError: invalid clouds, unknown estimator/cost/option names, bad option values.
    """
    x, a, y, b = check_pair(positive, negative)
    c = get_cost(cost, gain=cost_gain, margin=margin)
    resolve_options(estimator, options)  # fail on bad names before any work
    with torch.enable_grad():
        da = torch.zeros_like(a, requires_grad=True)
        db = torch.zeros_like(b, requires_grad=True)
        res = run(estimator, x, a + da, y, b + db, c, **options)
        if res.f is None or res.g is None:
            ga, gb = torch.autograd.grad(res.value.sum(), (da, db), retain_graph=True, allow_unused=True)
            res.f = torch.zeros_like(a) if ga is None else ga
            res.g = torch.zeros_like(b) if gb is None else gb
    res.f = res.f - (a.detach() * res.f).sum(-1, keepdim=True)
    res.g = res.g - (b.detach() * res.g).sum(-1, keepdim=True)
    return res


def violation(
    positive: CloudLike,
    negative: CloudLike,
    *,
    estimator: str = "sinkhorn",
    cost: str | Cost = "hinge",
    cost_gain: float = 1.0,
    margin: float = 0.0,
    part: str = "value",
    **options: Any,
) -> torch.Tensor:
    """The violation ``D_h(P ≽ Q)`` (DESIGN.md §1), ``0`` when ``P`` dominates ``Q`` (``hinge``).

    Args:
        positive: the cloud that should dominate, points ``(..., n, d)`` [+ weights ``(..., n)``].
        negative: the dominated cloud, points ``(..., m, d)`` [+ weights ``(..., m)``].
        estimator: ``"exact"`` | ``"quantile"`` | ``"sliced"`` | ``"sinkhorn"``.
        cost: ``"hinge"`` | ``"squared_hinge"`` | ``"logistic"`` | ``"least_squares"`` or a ``Cost``.
        cost_gain, margin: the cost's gain ``g`` and margin ``m`` (:mod:`multidom.core.costs`).
        part: ``"value"`` (the entropic objective for ``sinkhorn``) or ``"transport"`` (``<pi, C>``;
            identical to ``value`` for the unregularised estimators).
        **options: estimator options (module docstring).
    Returns:
        ``(...)`` the batch shape (0-dim for unbatched clouds); differentiable in points and weights.
    """
    _check_part(part)
    x, a, y, b = check_pair(positive, negative)
    c = get_cost(cost, gain=cost_gain, margin=margin)
    est, opts = resolve_options(estimator, options)  # refuses an unknown estimator or option, no defaults added
    return getattr(est.fn(x, a, y, b, c, **opts), part)


def _tie_ratio(d_pq: torch.Tensor, x, a, y, b, c: Cost, est, merged: dict) -> torch.Tensor | None:
    """``eps`` from ``D(P ≽ Q)`` alone through the tie ``D(Q ≽ P) = D(P ≽ Q) + k (E_P s - E_Q s)``;
    ``None`` when the cost has no tie slope or the estimator no linear statistic."""
    k = c.tie_slope
    if k is None or est.statistic is None:
        return None
    s_p = (a * est.statistic(x, **merged)).sum(-1)
    s_q = (b * est.statistic(y, **merged)).sum(-1)
    d_qp = d_pq + k * (s_p - s_q)
    # the weighted means carry rounding of order ulp(|s|): a difference below it is a tie, not a violation
    rounding = 16 * torch.finfo(d_qp.dtype).eps * k * (s_p.abs() + s_q.abs())
    d_qp = torch.where(d_qp.abs() <= rounding, torch.zeros_like(d_qp), d_qp)
    return _ratio(d_pq, d_qp.clamp(min=0.0))


def _ratio(d_pq: torch.Tensor, d_qp: torch.Tensor) -> torch.Tensor:
    total = d_pq + d_qp
    positive_total = total > 0
    safe = torch.where(positive_total, total, torch.ones_like(total))
    return torch.where(positive_total, d_pq / safe, torch.full_like(total, 0.5))


def ratio_from_value(
    value: torch.Tensor,
    positive: CloudLike,
    negative: CloudLike,
    *,
    estimator: str = "sinkhorn",
    cost: str | Cost = "hinge",
    cost_gain: float = 1.0,
    margin: float = 0.0,
    **options: Any,
) -> torch.Tensor | None:
    """``eps(P ≽ Q)`` from an already solved ``value = D(P ≽ Q)`` (batch shape ``(...)``), or ``None``.

    Only when the cost has a tie slope (``hinge``, ``logistic`` without margin): then
    ``D(Q ≽ P) = D(P ≽ Q) + k (E_P s - E_Q s)`` needs no second solve (see :func:`violation_ratio`).
    A trainer that solved for potentials gets the logged ratio from the same solve this way.
    """
    x, a, y, b = check_pair(positive, negative)
    c = get_cost(cost, gain=cost_gain, margin=margin)
    est, merged = resolve_options(estimator, options)
    return _tie_ratio(value, x, a, y, b, c, est, merged)


def violation_ratio(
    positive: CloudLike,
    negative: CloudLike,
    *,
    estimator: str = "sinkhorn",
    cost: str | Cost = "hinge",
    cost_gain: float = 1.0,
    margin: float = 0.0,
    part: str = "value",
    **options: Any,
) -> torch.Tensor:
    """``eps(P, Q) = D(P ≽ Q) / (D(P ≽ Q) + D(Q ≽ P))`` in ``[0, 1]`` (arXiv 2406.06425, §3).

    ``eps(P, P) = 1/2``, ``eps(P, Q) + eps(Q, P) = 1``, ``eps = 0`` means dominance; ``1/2`` (with a
    zero gradient) where both violations vanish. When the cost has a tie slope ``k``
    (``hinge``, ``logistic`` with zero margin), ``D(Q ≽ P) = D(P ≽ Q) + k (E_P s - E_Q s)`` with the
    estimator's linear statistic ``s`` (coordinate sum; mean projection for ``sliced``), so one solve
    gives both; otherwise ``D(Q ≽ P)`` is solved on its own cost matrix (the cost is asymmetric).
    With ``sliced`` and ``seed=None`` one seed is drawn so that both directions use the same slices.
    In one dimension with ``squared_hinge`` (m = 0) this is del Barrio's ``eps_W2``.

    Returns:
        ``(...)`` the batch shape.
    """
    _check_part(part)
    x, a, y, b = check_pair(positive, negative)
    c = get_cost(cost, gain=cost_gain, margin=margin)
    est, merged = resolve_options(estimator, options)
    if "seed" in est.options and merged.get("seed") is None:
        options = {**options, "seed": int(torch.randint(0, 2**31 - 1, ()).item())}
        merged["seed"] = options["seed"]
    d_pq = getattr(run(estimator, x, a, y, b, c, **options), part)
    eps = _tie_ratio(d_pq, x, a, y, b, c, est, merged)
    if eps is not None:
        return eps
    return _ratio(d_pq, getattr(run(estimator, y, b, x, a, c, **options), part))
