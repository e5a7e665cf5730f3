"""AOT: alignment via optimal transport on the implicit reward (DESIGN.md §3.1).

Melnyk et al., "Distributional Preference Alignment of LLMs via Optimal Transport",
arXiv 2406.05882 (NeurIPS 2024). The loss is the 1-D violation of first-order stochastic
dominance, computed exactly by sorting (the monotone coupling is optimal for every convex cost):

* **unpaired** (paper eq. 9): ``u_i = logratio(x_i+, y_i+)`` (``n`` chosen), ``v_j =
  logratio(x_j-, y_j-)`` (``m`` rejected); loss ``D_h(U ≽ V) = (1/n) sum_i h(v_(i) - u_(i))``
  for ``n = m`` (the quantile coupling over merged cumulative weights otherwise).
* **paired** (paper eq. 8): ``z_i = log π_θ(y_i+|x_i) - log π_θ(y_i-|x_i)``, ``z_i^ref`` the same
  under ``π_ref``; loss ``D_h(Z ≽ Z_ref)`` (both vectors sorted independently).

``beta`` keeps TRL's meaning (the DPO temperature): the compared scalars are the implicit rewards
``beta * logratio``, and the violation cost ``h`` of the :class:`~multidom.core.spec.DominanceSpec`
(default :data:`AOT_SPEC`: logistic with gain 1, i.e. ``-logsigmoid(beta (u - v))`` as in TRL) is
applied to their sorted differences.

Label smoothing follows TRL's ``DPOTrainer`` (``loss_type="aot"`` / ``"aot_unpaired"``):
``(1 - ls) * (-logsigmoid(beta delta)) + ls * (-logsigmoid(-beta delta))`` on the sorted
differences ``delta``; since the sorted coupling is optimal for both directions in 1-D this is
exactly ``(1 - ls) D_h(U ≽ V) + ls D_h(V ≽ U)``, which is how it is computed here (so it holds for
every cost, not only the logistic one).

Departures from the paper: any cost of :mod:`multidom.core.costs` (the paper uses the logistic one and
mentions hinge / least squares), applied to ``beta * logratio``; an optional soft sort (NeuralSort, Grover et al., arXiv
1903.08850) in place of the hard sort; unequal chosen / rejected counts through the quantile
coupling (the paper assumes equal batch halves).
"""
from __future__ import annotations

import torch

from multidom.core.costs import get_cost
from multidom.core.spec import DominanceSpec

__all__ = ["AOT_SPEC", "aot_unpaired_loss", "aot_paired_loss", "soft_sort", "AOT_LOSSES"]

#: The paper's (and TRL's) cost: logistic, gain 1 on ``beta * logratio``, exact 1-D sorting, no normalisation.
AOT_SPEC = DominanceSpec(estimator="quantile", cost="logistic", normalisation="none")


def soft_sort(x: torch.Tensor, tau: float) -> torch.Tensor:
    """Ascending soft sort of ``x: (n,)`` by the NeuralSort relaxation (arXiv 1903.08850, eq. 4).

    ``P_hat[i, :] = softmax_j(((n + 1 - 2 i) x_j - sum_k |x_j - x_k|) / tau)`` is the relaxed
    permutation matrix of the *descending* sort; it is flipped for ascending order. Returns
    ``(n,)``, ``P_hat @ x``. As ``tau -> 0`` it converges to ``torch.sort(x).values``.
    """
    if not tau > 0:
        raise ValueError(f"soft sort temperature must be > 0, got {tau}")
    n = x.shape[0]
    pairwise = (x[:, None] - x[None, :]).abs().sum(-1)  # (n,)
    scale = (n + 1 - 2 * torch.arange(1, n + 1, dtype=x.dtype, device=x.device))[:, None]  # (n, 1)
    perm = torch.softmax((scale * x[None, :] - pairwise[None, :]) / tau, dim=-1)  # (n, n)
    return (perm @ x).flip(0)


def _check_scalars(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of per-sequence scalars, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is empty: the batch holds no {name.split('_')[0]} sequences; "
            "use a larger batch or balance the desirable/undesirable examples"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < float("inf"):
        raise ValueError(f"beta (the DPO temperature) must be a finite number > 0, got {beta!r}")
    return float(beta)


def _dominance(
    u: torch.Tensor,
    v: torch.Tensor,
    spec: DominanceSpec,
    label_smoothing: float,
    soft_sort_tau: float | None,
) -> torch.Tensor:
    """``(1 - ls) D_h(U ≽ V) + ls D_h(V ≽ U)`` for ``u: (n,)``, ``v: (m,)``; returns a 0-dim tensor."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    if spec.normalisation != "none":
        raise ValueError("AOT compares implicit rewards beta * logratio: dominance.normalisation must be 'none'")
    if soft_sort_tau is not None:
        if u.shape != v.shape:
            raise ValueError(f"soft sort needs as many chosen as rejected scalars, got {u.shape[0]} and {v.shape[0]}")
        bound = get_cost(spec.cost, gain=spec.cost_gain, margin=spec.margin)
        us, vs = soft_sort(u, soft_sort_tau), soft_sort(v, soft_sort_tau)
        forward, backward = bound.h(vs - us).mean(), bound.h(us - vs).mean()
    else:
        forward = spec.violation(u[:, None], v[:, None])
        backward = spec.violation(v[:, None], u[:, None]) if label_smoothing else forward.new_zeros(())
    if label_smoothing == 0.0:
        return forward
    return (1.0 - label_smoothing) * forward + label_smoothing * backward


def aot_unpaired_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    *,
    beta: float = 0.01,
    spec: DominanceSpec = AOT_SPEC,
    label_smoothing: float = 0.0,
    soft_sort_tau: float | None = None,
) -> torch.Tensor:
    """Unpaired AOT loss ``D_h(U ≽ V)`` (arXiv 2406.05882, eq. 9).

    Args:
        chosen_logratios: ``(n,)`` ``log π_θ(y+|x) - log π_ref(y+|x)`` of the desirable sequences.
        rejected_logratios: ``(m,)`` the same for the undesirable sequences (``m`` may differ from ``n``).
        beta: the DPO temperature: the implicit rewards ``beta * logratio`` are compared (paper
            default 0.01).
        spec: the violation (cost, gain, margin, estimator); :data:`AOT_SPEC` is TRL's ``aot_unpaired``.
        label_smoothing: ``ls`` in ``[0, 0.5)``; ``(1 - ls) D(U ≽ V) + ls D(V ≽ U)``.
        soft_sort_tau: temperature of the NeuralSort relaxation, or ``None`` for the exact sort.
    Returns:
        0-dim loss. With ``n = m``, logistic cost, ``ls = 0``:
        ``mean_i -logsigmoid(beta * (u_(i) - v_(i)))``.
    """
    u = _check_scalars(chosen_logratios, "chosen_logratios")
    v = _check_scalars(rejected_logratios, "rejected_logratios")
    beta = _check_beta(beta)
    return _dominance(beta * u, beta * v, spec, label_smoothing, soft_sort_tau)


def aot_paired_loss(
    policy_margins: torch.Tensor,
    reference_margins: torch.Tensor,
    *,
    beta: float = 0.01,
    spec: DominanceSpec = AOT_SPEC,
    label_smoothing: float = 0.0,
    soft_sort_tau: float | None = None,
) -> torch.Tensor:
    """Paired AOT loss ``D_h(Z ≽ Z_ref)`` (arXiv 2406.05882, eq. 8).

    Args:
        policy_margins: ``(n,)`` ``z_i = log π_θ(y_i+|x_i) - log π_θ(y_i-|x_i)``.
        reference_margins: ``(n,)`` ``z_i^ref``, the same under the reference (no gradient needed).
        beta, spec, label_smoothing, soft_sort_tau: as in :func:`aot_unpaired_loss`.
    Returns:
        0-dim loss; logistic, ``ls = 0``: ``mean_i -logsigmoid(beta * (z_(i) - z^ref_(i)))``.
    """
    z = _check_scalars(policy_margins, "policy_margins")
    z_ref = _check_scalars(reference_margins, "reference_margins")
    if z.shape != z_ref.shape:
        raise ValueError(f"paired AOT needs as many policy as reference margins, got {z.shape[0]} and {z_ref.shape[0]}")
    beta = _check_beta(beta)
    return _dominance(beta * z, beta * z_ref, spec, label_smoothing, soft_sort_tau)


AOT_LOSSES = {"unpaired": aot_unpaired_loss, "paired": aot_paired_loss}
