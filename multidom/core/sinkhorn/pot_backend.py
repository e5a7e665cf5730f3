"""POT backend: POT's log-domain Sinkhorn (``ot.bregman.sinkhorn_log``) behind the common interface.

POT (Flamary et al., JMLR 2021) is unbatched, so the leading dimensions are looped over. Only the
log-domain solver is used: on this stack (POT 0.9.7) the default ``'sinkhorn'`` and
``'sinkhorn_stabilized'`` methods return 0, NaN or NaN gradients on violation costs (DESIGN.md §2;
checked in ``tests/test_sinkhorn_backends.py``). ``ot.solve(M, a, b, reg=...)`` calls this same
function for KL-regularised balanced OT; it is called directly because ``ot.solve`` prints a
warning and perturbs the weights when one is zero, and its ``grad='envelope'`` sets the weight
gradient to ``reg * log u`` -- the gradient of the *entropy*-regularised problem, which differs
from the KL one (``f = reg (log u - log a)``) unless the weights are uniform.

What POT gives here: the converged scaling ``log v`` (``pi = exp(-C/reg + log u ⊕ log v)``), turned
into our potential ``g_j = reg (log v_j - log b_j)``; then ``f`` is its exact c-transform (POT's
own last update, which also defines ``f`` on zero-weight samples) and the value and gradients
come from :func:`multidom.core.sinkhorn.builtin.envelope_result`, as for every backend.

Differences from the built-in solver: no epsilon-scaling (``eps_scaling`` is ignored -- POT's
log solver starts from zero potentials at ``reg``); POT stops on the L2 norm of the column-marginal
error, checked every 10 iterations, so ``stopThr = tol / sqrt(m)`` is passed (an L1 error below
``tol``; the built-in one uses the L1 row error). POT's own non-convergence warning is off: the
common check of :func:`multidom.core.sinkhorn.sinkhorn_estimator` reports it, with the error.
"""
from __future__ import annotations

import ot
import torch

from multidom.core.clouds import ViolationResult
from multidom.core.costs import Cost, cost_matrix
from multidom.core.sinkhorn.builtin import envelope_result, f_update, g_update, state_from_potentials

__all__ = ["solve"]


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
    """Entropic violation with POT's ``sinkhorn_log``; arguments and return as in
    :func:`multidom.core.sinkhorn.sinkhorn_estimator` (``x (..., n, d)``, ``a (..., n)``,
    ``y (..., m, d)``, ``b (..., m)``). ``eps_scaling`` is ignored (see the module docstring).
    """
    with torch.no_grad():
        c = cost_matrix(x.detach(), y.detach(), cost)
        n, m = c.shape[-2:]
        cd = c.reshape(-1, n, m)
        ad, bd = a.detach().reshape(-1, n).to(c.dtype), b.detach().reshape(-1, m).to(c.dtype)
        # POT stops on the L2 column error; L1 <= sqrt(m) L2, so this threshold means an L1 error < tol
        logs = [
            ot.bregman.sinkhorn_log(ad[k], bd[k], cd[k], reg, numItermax=max_iter, stopThr=tol / m**0.5,
                                    log=True, warn=False)[1]
            for k in range(cd.shape[0])
        ]
        log_v = torch.stack([log["log_v"] for log in logs])
        log_a, log_b = ad.log(), bd.log()
        g = torch.where(bd > 0, reg * (log_v - log_b), torch.zeros_like(log_v))
        neg_c = cd / -reg
        f = f_update(neg_c, g, log_b, reg)
        g = torch.where(bd > 0, g, g_update(neg_c, f, log_a, reg))  # c-transform on masked samples
    state = state_from_potentials(c, f.reshape(a.shape), g.reshape(b.shape), reg, a, b)
    state.iterations = max(int(log["niter"]) + 1 for log in logs)
    return envelope_result(x, a, y, b, cost, c, state, reg=reg, return_plan=return_plan)
