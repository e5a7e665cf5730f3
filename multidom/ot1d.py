"""Exact one-dimensional optimal transport for the violation cost ``c(u, v) = h(v - u)``.

DESIGN.md §2. For a convex ``h`` the cost ``h(v - u)`` is submodular, so the monotone (quantile)
coupling is optimal (Santambrogio 2015, Thm 2.9; the AOT loss of arXiv 2406.05882, eq. 9, is this
value for the logistic ``h``):

``D_h^{1D}(U ≽ V) = int_0^1 h(Q_V(t) - Q_U(t)) dt``

* uniform weights, equal sizes: ``D = (1/n) sum_i h(v_(i) - u_(i))`` (sort both);
* weights or unequal sizes: merge the cumulative weights ``A_i = a_(1) + .. + a_(i)`` and
  ``B_j`` into breakpoints ``0 = t_0 <= t_1 <= ... <= t_{n+m}``; on ``(t_{k-1}, t_k]`` the coupling
  pairs ``u_(i_k)`` with ``v_(j_k)`` (the quantile indices), so
  ``D = sum_k (t_k - t_{k-1}) h(v_(j_k) - u_(i_k))`` — POT's ``wasserstein_1d`` / ``emd_1d`` for a
  general ``h``. The masses ``t_k - t_{k-1}`` are differentiable in the weights (the indices are
  piecewise constant), so ``dD/da_i`` is the Kantorovich potential of ``u_i`` up to a constant.

Everything is batched over leading dimensions: ``u: (..., n)``, ``v: (..., m)``.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["ot1d", "quantile_coupling", "quantile_plan"]

H = Callable[[torch.Tensor], torch.Tensor]


def _is_uniform(w: torch.Tensor | None) -> bool:
    """True when ``w`` is ``None`` or a constant vector that carries no gradient."""
    if w is None:
        return True
    return not w.requires_grad and bool((w == w[..., :1]).all())


def quantile_coupling(
    a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The quantile (north-west corner) coupling of two weight vectors already in sorted order.

    Args:
        a: ``(..., n)`` weights of the sorted positive points, summing to one.
        b: ``(..., m)`` weights of the sorted negative points, summing to one.
    Returns:
        ``(i, j, mass)``, each ``(..., n + m)``: segment ``k`` couples sorted position ``i[k]`` with
        ``j[k]`` and carries ``mass[k] >= 0`` (differentiable in ``a`` and ``b``; some segments have
        mass zero). ``sum_k mass[k] = 1``.
    """
    n, m = a.shape[-1], b.shape[-1]
    ca, cb = torch.cumsum(a, -1), torch.cumsum(b, -1)
    t = torch.sort(torch.cat([ca, cb], -1), dim=-1).values
    lo = torch.cat([torch.zeros_like(t[..., :1]), t[..., :-1]], -1)
    mass = t - lo
    mid = (0.5 * (t + lo)).detach().contiguous()
    # first cumulative weight >= the segment's midpoint; roundoff near 1 is clamped to the last point
    i = torch.searchsorted(ca.detach().contiguous(), mid).clamp_(max=n - 1)
    j = torch.searchsorted(cb.detach().contiguous(), mid).clamp_(max=m - 1)
    return i, j, mass


def ot1d(
    u: torch.Tensor,
    v: torch.Tensor,
    h: H,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact 1-D violation ``min_pi sum_ij pi_ij h(v_j - u_i)`` by the monotone coupling.

    Args:
        u: ``(..., n)`` positive (dominating) points.
        v: ``(..., m)`` negative (dominated) points.
        h: elementwise convex cost, e.g. ``Cost.h``.
        a: ``(..., n)`` weights summing to one, or ``None`` for uniform.
        b: ``(..., m)`` weights summing to one, or ``None`` for uniform.
    Returns:
        ``(...)`` the violation; differentiable in ``u``, ``v``, ``a`` and ``b``.
    """
    n, m = u.shape[-1], v.shape[-1]
    if n == m and _is_uniform(a) and _is_uniform(b):
        us = torch.sort(u, dim=-1).values
        vs = torch.sort(v, dim=-1).values
        return h(vs - us).mean(-1)
    if a is None:
        a = torch.full_like(u, 1.0 / n)
    if b is None:
        b = torch.full_like(v, 1.0 / m)
    us, iu = torch.sort(u, dim=-1)
    vs, iv = torch.sort(v, dim=-1)
    i, j, mass = quantile_coupling(torch.gather(a, -1, iu), torch.gather(b, -1, iv))
    cost = h(torch.gather(vs, -1, j) - torch.gather(us, -1, i))
    return (mass * cost).sum(-1)


def quantile_plan(
    u: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense optimal plan ``(..., n, m)`` of the 1-D problem, in the original (unsorted) order.

    Same for every convex ``h``; ``plan.sum(-1) = a``, ``plan.sum(-2) = b``. Meant for small clouds
    and tests (it materialises ``n x m``).
    """
    n, m = u.shape[-1], v.shape[-1]
    a = torch.full_like(u, 1.0 / n) if a is None else a
    b = torch.full_like(v, 1.0 / m) if b is None else b
    iu = torch.sort(u, dim=-1).indices
    iv = torch.sort(v, dim=-1).indices
    i, j, mass = quantile_coupling(torch.gather(a, -1, iu), torch.gather(b, -1, iv))
    flat = torch.gather(iu, -1, i) * m + torch.gather(iv, -1, j)
    plan = torch.zeros(*u.shape[:-1], n * m, dtype=mass.dtype, device=mass.device)
    return plan.scatter_add(-1, flat, mass).reshape(*u.shape[:-1], n, m)
