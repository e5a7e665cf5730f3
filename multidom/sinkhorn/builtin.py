"""Built-in log-domain Sinkhorn in PyTorch, batched over leading dimensions.

Solves, for every batch entry independently (arXiv 2406.06425 §3; Cuturi 2013; Peyré & Cuturi
2019, "Computational Optimal Transport", Remark 4.23 for the log-domain updates),

    OT_lambda(a, b, C) = min_pi <pi, C> + lambda KL(pi || a ⊗ b)
                       = max_{f, g} <a, f> + <b, g> - lambda <a ⊗ b, exp((f ⊕ g - C) / lambda) - 1>,

by alternating the exact block maximisations (``lambda`` = ``reg``)

    f_i = -lambda LSE_j( log b_j + (g_j - C_ij) / lambda ),
    g_j = -lambda LSE_i( log a_i + (f_i - C_ij) / lambda ),

with the optimal plan ``pi_ij = a_i b_j exp((f_i + g_j - C_ij) / lambda)``.

* **Stop rule**: after the ``g`` update the column marginals are exact; the L1 row error
  ``sum_i |(pi 1)_i - a_i| = sum_i a_i |exp((f_i - f_i^new) / lambda) - 1|`` is read off the next
  ``f`` update for free. Iterate until it is below ``tol`` in every batch entry or ``max_iter``.
  The loop ends on an ``f`` update, so the returned plan has exact row marginals.
* **Epsilon-scaling**: anneal ``lambda`` geometrically from the cost range down to ``reg`` (one
  ``f, g`` update per intermediate value, warm-started potentials), as in geomloss (Feydy 2020,
  thesis §3.3.3) and Schmitzer 2019.
* **Clamped LSE**: ``exp`` arguments are clamped below at ``-_CLAMP[dtype]`` (their terms are
  below the dtype's resolution anyway); torch's CPU ``exp`` is several times slower on very
  negative (denormal-producing) arguments, which small ``lambda`` produces everywhere.
* **Zero weights** (masked samples): ``log 0 = -inf`` terms vanish from the LSEs; the potential of
  a masked sample is still defined (its c-transform), which is the gradient of the value with
  respect to that weight — what the sample *would* cost if it were included.
* **Gradient (envelope theorem)**: iterations run under ``torch.no_grad()`` on a detached cost
  matrix; then the dual objective above is evaluated once, differentiably in ``C`` (hence the
  points), ``a`` and ``b``, at the converged potentials. At the optimum its gradients are
  ``d/dC_ij = pi_ij``, ``d/da_i = f_i``, ``d/db_j = g_j``; memory does not grow with iterations.
"""
from __future__ import annotations

import math

import torch

from multidom.clouds import ViolationResult
from multidom.costs import Cost, cost_matrix

__all__ = ["solve", "sinkhorn_potentials", "eps_schedule", "envelope_result", "f_update", "g_update"]

#: lower clamp of LSE arguments (after subtracting the max): exp(-_CLAMP) is far below the
#: dtype's relative resolution, so clamping changes no result but keeps exp off its slow path.
_CLAMP: dict[torch.dtype, float] = {torch.float16: 10.0, torch.bfloat16: 20.0,
                                     torch.float32: 40.0, torch.float64: 80.0}


def _lse(z: torch.Tensor, dim: int) -> torch.Tensor:
    """``log sum exp`` over ``dim`` with the shifted arguments clamped below; consumes ``z``."""
    mx = z.amax(dim, keepdim=True)
    z.sub_(mx).clamp_(min=-_CLAMP.get(z.dtype, 40.0)).exp_()
    return (mx + z.sum(dim, keepdim=True).log_()).squeeze(dim)


def f_update(neg_c: torch.Tensor, g: torch.Tensor, log_b: torch.Tensor, reg: float) -> torch.Tensor:
    """``f_i = -reg LSE_j(log b_j + (g_j - C_ij)/reg)``; ``neg_c = -C/reg`` ``(..., n, m)``."""
    return -reg * _lse(neg_c + (g / reg + log_b).unsqueeze(-2), -1)


def g_update(neg_c: torch.Tensor, f: torch.Tensor, log_a: torch.Tensor, reg: float) -> torch.Tensor:
    """``g_j = -reg LSE_i(log a_i + (f_i - C_ij)/reg)``."""
    return -reg * _lse(neg_c + (f / reg + log_a).unsqueeze(-1), -2)


def eps_schedule(c: torch.Tensor, reg: float, eps_scaling: float | None) -> list[float]:
    """Decreasing ``lambda`` values ending at ``reg``: ``range(C) * s^k`` while above ``reg``.

    ``range(C)`` is the largest cost spread over the whole batch (one schedule for all entries).
    """
    if eps_scaling is None:
        return [reg]
    spread = float((c.amax(dim=(-2, -1)) - c.amin(dim=(-2, -1))).max())
    if not spread > reg:
        return [reg]
    n_stages = int(math.ceil(math.log(spread / reg) / math.log(1.0 / eps_scaling)))
    return [spread * eps_scaling**k for k in range(n_stages)] + [reg]


def _kernel(c: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """Stabilised Gibbs kernel ``K_ij = exp((f_i + g_j - C_ij) / eps)`` ``(..., n, m)``, exponent
    clamped to ``[-_CLAMP, hi]``: the low side keeps ``exp`` off its slow underflow path (those
    entries are below the dtype's resolution next to the row's O(1) terms), the high side keeps
    products finite before the next absorption."""
    lo = _CLAMP.get(c.dtype, 40.0)
    hi = 0.45 * math.log(torch.finfo(c.dtype).max)
    k = f.unsqueeze(-1) + g.unsqueeze(-2)
    return k.sub_(c).div_(eps).clamp_(-lo, hi).exp_()


def _matvec(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(K v)_i = sum_j K_ij v_j``: ``(..., n, m), (..., m) -> (..., n)``."""
    return torch.matmul(k, v.unsqueeze(-1)).squeeze(-1)


def _vecmat(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``(u^T K)_j = sum_i u_i K_ij``: ``(..., n), (..., n, m) -> (..., m)``."""
    return torch.matmul(u.unsqueeze(-2), k).squeeze(-2)


@torch.no_grad()
def sinkhorn_potentials(
    c: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    reg: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    eps_scaling: float | None = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Converged dual potentials of ``OT_reg(a, b, C)``, no autograd.

    The block updates are the log-domain ones of the module docstring, carried out as
    *stabilised scalings with absorption* (Schmitzer 2019, "Stabilized sparse scaling algorithms
    for entropy regularized transport problems", Alg. 2): with ``f = f0 + eps log u`` and
    ``g = g0 + eps log v``, ``f_i = -eps LSE_j(log b_j + (g_j - C_ij)/eps)`` is exactly
    ``u_i = 1 / (K (b v))_i`` with ``K = exp((f0 ⊕ g0 - C)/eps)``, so one update is one
    matrix-vector product over ``(n, m)`` instead of six elementwise passes and an ``exp``.
    Whenever ``|log u|`` or ``|log v|`` exceeds a dtype-dependent bound, and at every change of
    ``eps``, ``u, v`` are absorbed into ``f0, g0`` and ``K`` is recomputed (clamped exponent), so
    nothing overflows or underflows; with epsilon-scaling the potentials stay close to optimal
    and absorptions are rare.

    Args:
        c: ``(..., n, m)`` cost matrix.
        a: ``(..., n)``, b: ``(..., m)`` weights (``>= 0``, summing to one; zeros allowed).
        reg, max_iter, tol, eps_scaling: see :func:`multidom.sinkhorn.sinkhorn_estimator`.

    Returns:
        ``(f (..., n), g (..., m), iterations at reg, max L1 row-marginal error before the last
        f update)``. The last update is an ``f`` update (exact row marginals).
    """
    c = c.detach()
    a, b = a.detach().to(c.dtype), b.detach().to(c.dtype)
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    bound = 0.25 * _CLAMP.get(c.dtype, 40.0)  # |log u| + |log v| stays well inside the clamp
    stages = eps_schedule(c, reg, eps_scaling)
    for eps in stages[:-1]:  # annealing: one block update per lambda value, then absorb
        k = _kernel(c, f, g, eps)
        u = _matvec(k, b).reciprocal_()
        v = _vecmat(a * u, k).reciprocal_()
        f, g = f + eps * u.log(), g + eps * v.log()
    k = _kernel(c, f, g, reg)
    u = _matvec(k, b).reciprocal_()
    v = torch.ones_like(b)
    err, it = float("inf"), 0
    small = c.device.type != "cpu" or c.numel() < 100_000
    check_every = 10 if small else 1  # a check costs a sync, and fixed overhead on small problems
    while it < max_iter:
        v = _vecmat(a * u, k).reciprocal_()
        kbv = _matvec(k, b * v)
        it += 1
        if it % check_every == 0 or it == max_iter:
            err = float((a * (u * kbv - 1.0).abs_()).sum(-1).max())
        u = kbv.reciprocal_()
        if err < tol:
            break
        if it % check_every == 0 and float(torch.maximum(u.log().abs().amax(), v.log().abs().amax())) > bound:
            f, g = f + reg * u.log(), g + reg * v.log()
            k = _kernel(c, f, g, reg)
            u = _matvec(k, b).reciprocal_()
            v = torch.ones_like(b)
    return f + reg * u.log(), g + reg * v.log(), it, err


def solve(
    x: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    b: torch.Tensor,
    cost: Cost,
    *,
    reg: float = 0.1,
    max_iter: int = 1000,
    tol: float = 1e-6,
    eps_scaling: float | None = 0.5,
    return_plan: bool = False,
) -> ViolationResult:
    """Entropic violation by the built-in solver; arguments as in
    :func:`multidom.sinkhorn.sinkhorn_estimator` (``x (..., n, d)``, ``a (..., n)``,
    ``y (..., m, d)``, ``b (..., m)``).

    ``value`` is the dual objective at the converged potentials (= the primal
    ``<pi, C> + reg KL(pi || a ⊗ b)`` up to the marginal error), differentiable by the envelope
    theorem. ``transport = <pi, C>`` carries the gradient with the plan held fixed (``d/dC = pi``;
    exact as ``reg -> 0``, like POT's envelope mode it has no gradient in the weights).
    """
    c = cost_matrix(x, y, cost)
    f, g, _, _ = sinkhorn_potentials(c, a, b, reg=reg, max_iter=max_iter, tol=tol, eps_scaling=eps_scaling)
    return envelope_result(c, a, b, f, g, reg=reg, return_plan=return_plan)


def envelope_result(
    c: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    *,
    reg: float,
    return_plan: bool = False,
) -> ViolationResult:
    """Differentiable value at given (converged, detached) potentials; shared by all backends.

    ``value = <a, f> + <b, g> - reg (sum_ij a_i b_j exp((f_i + g_j - C_ij)/reg) - |a| |b|)`` --
    the dual objective of ``<pi, C> + reg KL(pi || a ⊗ b)`` with the generalised KL (``+ |a ⊗ b|
    - |pi|``), equal to the primal at the optimum (``|.|`` = total mass, 1 on the simplex). Its
    autograd gradients are the envelope-theorem ones: ``d/dC = pi``,
    ``d/da_i = f_i - reg ((pi 1)_i / a_i - |b|)`` (``= f_i`` when the row marginals are exact, as
    after an ``f`` update), ``d/db`` likewise.

    Args:
        c: ``(..., n, m)`` cost matrix (carrying the autograd graph to the points).
        a: ``(..., n)``, b: ``(..., m)`` weights; f: ``(..., n)``, g: ``(..., m)`` potentials.
    """
    f, g = f.detach().to(c.dtype), g.detach().to(c.dtype)
    # exp((f_i + g_j - C_ij)/reg) = pi_ij / (a_i b_j); clamped so 0 * inf never makes a NaN for
    # pairs of masked samples, whose potentials are unconstrained by the plan.
    hi = 0.9 * math.log(torch.finfo(c.dtype).max)
    ratio = ((f.unsqueeze(-1) + g.unsqueeze(-2) - c) / reg).clamp(max=hi).exp()
    plan = a.unsqueeze(-1) * b.unsqueeze(-2) * ratio
    value = (a * f).sum(-1) + (b * g).sum(-1) + reg * (a.sum(-1) * b.sum(-1) - plan.sum(dim=(-2, -1)))
    transport = (plan.detach() * c).sum(dim=(-2, -1))
    return ViolationResult(
        value=value, transport=transport, plan=plan if return_plan else None, f=f, g=g,
    )
