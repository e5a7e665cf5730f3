"""geomloss backend: ``SamplesLoss("sinkhorn")`` with side-tagged points for the asymmetric cost.

geomloss (Feydy et al., AISTATS 2019) builds ``C(x, y)`` **and** ``C(y, x)`` by calling the cost
function with swapped arguments and uses the second as the transpose of the first. The violation
cost ``c_h(x, y) = sum_k h(y_k - x_k)`` is not symmetric, so a plain custom cost silently solves
a different (even negative-valued) problem. Here every point carries a side tag as an extra last
coordinate, ``+1`` on the positive cloud and ``-1`` on the negative one, and the cost reads the
tag of its first argument ``u`` to orient the difference:

    cost(u, v)_ij = sum_k h( s(u_i) * (v_jk - u_ik) ),   s = +1 (u positive), -1 (u negative),

so ``cost(x, y) = C`` and ``cost(y, x) = C^T`` exactly.

Conventions reconciled with the built-in solver (checked in ``tests/test_sinkhorn_backends.py``):
``p = 1`` so that geomloss's temperature ``eps = blur**p = reg``; ``debias=False`` (the raw
entropic OT, not the Sinkhorn divergence); ``diameter`` set so that the annealing starts at the
cost range, as in the built-in solver; ``scaling = eps_scaling``. With ``debias=False`` geomloss's
value is ``<a, f> + <b, g>``, the dual objective at its potentials, i.e. the same
``<pi, C> + reg KL(pi || a ⊗ b)`` at convergence.

geomloss runs a fixed number of symmetric (averaged) updates -- one per annealing step, ending
with a single one at ``reg`` -- so its accuracy is set by ``eps_scaling`` alone (closer to 1 = more
iterations); ``max_iter`` does not apply, and ``tol`` only judges the result: the returned plan's
L1 marginal error is compared with it afterwards (a warning, or an error, from
:func:`multidom.core.sinkhorn.sinkhorn_estimator` when above). Measured on small problems at ``reg = 0.1``:
ratio 0.5 leaves the value off by ~1e-3 and ``<pi, C>`` by ~0.1; 0.998 (~1,300 updates) brings the
value to ~1e-4 and the potentials to a few 1e-2. Prefer ``builtin`` or ``pot`` when the
potentials are used as advantages. Its potentials are finished with one exact c-transform (so
the row marginals are exact, as for the other backends) and the value and gradients come from
:func:`multidom.core.sinkhorn.builtin.envelope_result`; geomloss's own backward (through its last
extrapolation step) is not used.
"""
from __future__ import annotations

from functools import partial

import torch
from geomloss import SamplesLoss

from multidom.core.clouds import ViolationResult
from multidom.core.costs import Cost, cost_matrix
from multidom.core.sinkhorn.builtin import envelope_result, f_update, state_from_potentials

__all__ = ["DEFAULT_SCALING", "solve", "tagged_cost", "tag"]

#: annealing ratio used when the caller passes ``eps_scaling=None`` or ``"auto"`` (geomloss always anneals).
DEFAULT_SCALING = 0.9


def tag(points: torch.Tensor, side: float) -> torch.Tensor:
    """Append the side tag: ``(..., n, d) -> (..., n, d + 1)`` with last coordinate ``side``."""
    return torch.cat([points, points.new_full((*points.shape[:-1], 1), side)], dim=-1)


def tagged_cost(u: torch.Tensor, v: torch.Tensor, cost: Cost) -> torch.Tensor:
    """geomloss cost on tagged points: ``u (B, N, d+1)``, ``v (B, M, d+1)`` -> ``(B, N, M)``,
    ``sum_k h(s(u_i) (v_jk - u_ik))`` with ``s(u_i) = u_i[-1]`` (see the module docstring)."""
    side = u[..., :, None, -1]
    out = cost.h(side * (v[..., None, :, 0] - u[..., :, None, 0]))
    for k in range(1, u.shape[-1] - 1):
        out = out + cost.h(side * (v[..., None, :, k] - u[..., :, None, k]))
    return out


def solve(
    x: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    b: torch.Tensor,
    cost: Cost,
    *,
    reg: float,
    max_iter: int,
    tol: float,
    eps_scaling: float | str | None,
    return_plan: bool,
) -> ViolationResult:
    """Entropic violation with geomloss; arguments and return as in
    :func:`multidom.core.sinkhorn.sinkhorn_estimator` (``x (..., n, d)``, ``a (..., n)``,
    ``y (..., m, d)``, ``b (..., m)``). ``max_iter`` does not apply and ``tol`` only judges the
    result (module docstring); ``eps_scaling=None`` or ``"auto"`` means :data:`DEFAULT_SCALING`.
    """
    if eps_scaling is None or eps_scaling == "auto":
        eps_scaling = DEFAULT_SCALING
    n, m, d = x.shape[-2], y.shape[-2], x.shape[-1]
    with torch.no_grad():
        c = cost_matrix(x.detach(), y.detach(), cost)
        cd = c.reshape(-1, n, m)
        spread = float((cd.amax(dim=(-2, -1)) - cd.amin(dim=(-2, -1))).max())
        solver = SamplesLoss(
            "sinkhorn", p=1, blur=reg, diameter=max(spread, reg), scaling=float(eps_scaling),
            debias=False, potentials=True, backend="tensorized", cost=partial(tagged_cost, cost=cost),
        )
        ad, bd = a.detach().reshape(-1, n).to(c.dtype), b.detach().reshape(-1, m).to(c.dtype)
        _, g = solver(ad, tag(x.detach().reshape(-1, n, d), 1.0), bd, tag(y.detach().reshape(-1, m, d), -1.0))
        f = f_update(cd / -reg, g, bd.log(), reg)
    state = state_from_potentials(c, f.reshape(a.shape), g.reshape(b.shape), reg, a, b)
    return envelope_result(x, a, y, b, cost, c, state, reg=reg, return_plan=return_plan)
