"""Advantages from dominance potentials: the online multi-reward objective (DESIGN.md §3.2).

For ``B`` prompts with ``G`` policy generations each, the reward bank gives points
``r_ij in R^d`` (the *positive* cloud, which must dominate) and a baseline gives points
``s_il`` (the *negative* cloud). With ``D = violation(P ≽ Q)`` from any estimator of
``multidom.violation`` (arXiv 2406.06425 for the multivariate statistic; arXiv 2406.05882, AOT, for
the one-reward case), the signal of sample ``ij`` is its **potential**

    phi_ij = n_i * dD / dw_ij        (w_ij = 1 for a valid sample, 0 for a masked one)

which, because the estimators normalise raw weights inside (``a = w / sum w``), equals the centred
Kantorovich potential ``f_ij - sum_l a_il f_il`` of the sample: how much more violation the cloud
would have if the sample weighed more. The advantage is ``A_ij = -(phi_ij - mean_j phi_ij)``
(mean over the valid samples of prompt ``i``); masked samples get ``A = 0`` and never enter a cloud
(weight 0, points replaced by 0 so no NaN reaches an estimator).

Departures from the papers: neither paper trains a policy online with these potentials; AOT
optimises the 1-D violation of implicit rewards offline, Rioux et al. use the statistic for
benchmarking. Using the weight-gradient as a policy-gradient reward is this library's method.

Grouping (table :data:`GROUPINGS`): ``per_prompt`` compares each prompt's ``G`` points with that
prompt's baseline points (conditional dominance, batched as ``(B, G, d)`` vs ``(B, M, d)``);
``pooled`` compares the whole batch's clouds (marginal dominance). Normalisation (table
:data:`NORMALISERS`): attributes are mapped through a monotone per-attribute transform fitted on the
baseline (z-score, or the baseline's empirical CDF), so one cost, ``beta`` and ``lambda`` fit all
attributes; monotone increasing maps preserve dominance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from multidom.core.costs import get_cost
from multidom.core.estimators import ESTIMATORS, resolve_options

__all__ = [
    "GROUPINGS",
    "NORMALISERS",
    "Potentials",
    "advantages_from_potentials",
    "dominance_potentials",
    "make_violation",
    "normalise",
]

ViolationFn = Callable[[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], torch.Tensor]

# Which keyword arguments of ``multidom.violation`` each estimator reads (besides cost/beta/margin),
# read from the estimator table so the two cannot drift apart.
ESTIMATOR_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(k for k in est.options if k not in ("return_plan", "num_iter_max"))
    for name, est in ESTIMATORS.items()
}


def make_violation(
    estimator: str, *, cost: str = "hinge", beta: float = 1.0, margin: float = 0.0, **params
) -> ViolationFn:
    """Bind ``multidom.violation`` to one estimator and its parameters.

    Parameters that the estimator does not read (e.g. ``reg`` for ``quantile``) are dropped, so a
    config can carry all of them; unknown estimator names raise ``ValueError`` listing the valid ones.
    Returns ``f(positive, negative) -> D`` of the batch shape.
    """
    if estimator not in ESTIMATOR_PARAMS:
        raise ValueError(f"unknown estimator {estimator!r}; valid estimators: {', '.join(ESTIMATOR_PARAMS)}")
    kept = {k: v for k, v in params.items() if k in ESTIMATOR_PARAMS[estimator] and v is not None}

    def violation(positive, negative):
        import multidom

        return multidom.violation(
            positive, negative, estimator=estimator, cost=cost, beta=beta, margin=margin, **kept
        )

    violation.spec = (estimator, get_cost(cost, beta=beta, margin=margin), kept)  # type: ignore[attr-defined]
    return violation


def ratio_from_value(violation: ViolationFn, value: torch.Tensor, x, a, y, b) -> torch.Tensor | None:
    """``eps(P ≽ Q)`` per batch entry from ``D(P ≽ Q)`` alone, when the cost has a tie slope ``k``.

    DESIGN.md §1: ``D(Q ≽ P) = D(P ≽ Q) + k (E_P s - E_Q s)`` with the estimator's linear statistic
    ``s`` (as in ``multidom.violation_ratio``), so the potentials' solve also gives the logged ratio.
    ``value: (K,)``, ``x: (K, n, d)``, ``a: (K, n)`` normalised weights, likewise ``y, b``. ``None``
    when no tie exists (``squared_hinge``, a margin) or ``violation`` is not from :func:`make_violation`.
    """
    spec = getattr(violation, "spec", None)
    if spec is None:
        return None
    estimator, cost, options = spec
    est, merged = resolve_options(estimator, options)
    if cost.tie_slope is None or est.statistic is None:
        return None
    s_p = (a * est.statistic(x, **merged)).sum(-1)
    s_q = (b * est.statistic(y, **merged)).sum(-1)
    d_qp = (value + cost.tie_slope * (s_p - s_q)).clamp(min=0.0)
    total = value + d_qp
    return torch.where(total > 0, value / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.full_like(total, 0.5))


# ---------------------------------------------------------------------------------------------
# Normalisation against the baseline: (policy (..., d), baseline (M, d) valid points) -> mapped.
# ---------------------------------------------------------------------------------------------


def _zscore(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(x - mean_Q) / std_Q`` per attribute; a constant attribute (std < 1e-6) is only centred."""
    mu = reference.mean(0)
    sd = reference.std(0, unbiased=False) if reference.shape[0] > 1 else torch.zeros_like(mu)
    sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))
    return (points - mu) / sd


def _cdf(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mid-rank empirical CDF of the baseline per attribute: ``(#{q < x} + #{q <= x}) / (2 M)``."""
    flat = points.reshape(-1, points.shape[-1])
    below = (reference[None, :, :] < flat[:, None, :]).sum(1)
    at_or_below = (reference[None, :, :] <= flat[:, None, :]).sum(1)
    return ((below + at_or_below).to(points.dtype) / (2.0 * reference.shape[0])).reshape(points.shape)


def _identity(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return points


NORMALISERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "zscore": _zscore,
    "cdf": _cdf,
    "none": _identity,
}


def normalise(
    policy: torch.Tensor, baseline: torch.Tensor, baseline_mask: torch.Tensor, method: str = "zscore"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map both clouds through a per-attribute monotone transform fitted on the valid baseline points.

    Args:
        policy: ``(..., G, d)`` policy points (NaN allowed where masked; NaN stays NaN).
        baseline: ``(..., M, d)`` baseline points.
        baseline_mask: ``(..., M)`` bool, True for valid baseline points. The statistics pool every
            valid baseline point of the batch (a per-prompt std from a few points would be noise).
        method: key of :data:`NORMALISERS`.
    Returns:
        ``(policy', baseline')`` with the input shapes.
    """
    if method not in NORMALISERS:
        raise ValueError(f"unknown normalisation {method!r}; valid: {', '.join(NORMALISERS)}")
    reference = baseline[baseline_mask]
    if reference.shape[0] == 0:
        raise ValueError("the baseline cloud has no valid point; cannot normalise against it")
    fn = NORMALISERS[method]
    return fn(policy, reference), fn(baseline, reference)


# ---------------------------------------------------------------------------------------------
# Grouping: which positive points are compared with which negative points.
# ---------------------------------------------------------------------------------------------


def _per_prompt(x, xm, y, ym):
    """Each prompt is its own batch entry: ``(B, G, d)`` vs ``(B, M, d)``; prompts without a valid
    policy sample or without a valid baseline point are skipped."""
    active = xm.any(-1) & ym.any(-1)
    return x[active], xm[active], y[active], ym[active], active


def _pooled(x, xm, y, ym):
    """One cloud of all valid policy points vs one cloud of all valid baseline points."""
    active = xm.any(-1)
    if not active.any() or not ym.any():
        active = torch.zeros_like(active)
    return x.reshape(1, -1, x.shape[-1]), xm.reshape(1, -1), y.reshape(1, -1, y.shape[-1]), ym.reshape(1, -1), active


GROUPINGS = {"per_prompt": _per_prompt, "pooled": _pooled}


@dataclass
class Potentials:
    """Output of :func:`dominance_potentials`.

    Attributes:
        phi: ``(B, G)`` potentials ``n * dD/dw``; 0 for masked samples and skipped prompts.
        valid: ``(B, G)`` bool, samples that entered a cloud.
        active: ``(B,)`` bool, prompts that received a signal (others: empty baseline or all masked).
        violation: 0-dim, the summed violation ``D`` over the batch entries that were computed.
        eps: ``(K,)`` the ratio ``eps(P ≽ Q)`` of each computed entry (``K`` active prompts, or 1 when
            pooled) from the same solve (:func:`ratio_from_value`), or ``None`` when unavailable.
    """

    phi: torch.Tensor
    valid: torch.Tensor
    active: torch.Tensor
    violation: torch.Tensor
    eps: torch.Tensor | None = None


def dominance_potentials(
    policy: torch.Tensor,
    policy_mask: torch.Tensor,
    baseline: torch.Tensor,
    baseline_mask: torch.Tensor,
    violation: ViolationFn,
    grouping: str = "per_prompt",
) -> Potentials:
    """Per-sample potentials ``phi = n * dD(P ≽ Q)/dw`` by autograd through ``violation``.

    ``D`` is convex and piecewise linear in the weights for ``quantile`` and ``sliced``; at equal cloud
    sizes every cumulative weight ``i/G`` ties with a ``j/M`` and the potentials are not unique.
    :func:`multidom.core.ot1d.ot1d` then returns the mean of the two one-sided derivatives (a subgradient in
    the middle of the dual set), so one autograd pass at ``w = 1`` is all this needs.

    Args:
        policy: ``(B, G, d)`` policy reward vectors (already normalised).
        policy_mask: ``(B, G)`` bool, False for samples the bank masked (they get weight 0).
        baseline: ``(B, M, d)`` baseline reward vectors of each prompt (padding allowed).
        baseline_mask: ``(B, M)`` bool, False for padding / masked baseline points.
        violation: ``f(positive, negative) -> D (K,)``, e.g. from :func:`make_violation`.
        grouping: key of :data:`GROUPINGS`.
    Returns:
        :class:`Potentials`. Nothing is computed (``phi = 0``) when no prompt is active.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"unknown grouping {grouping!r}; valid: {', '.join(GROUPINGS)}")
    if policy.dim() != 3 or baseline.dim() != 3:
        raise ValueError(f"policy and baseline must be (B, G, d) and (B, M, d); got {tuple(policy.shape)}, "
                         f"{tuple(baseline.shape)}")
    if policy.shape[-1] != baseline.shape[-1]:
        raise ValueError(f"the baseline has d = {baseline.shape[-1]} attributes but the reward bank gives "
                         f"d = {policy.shape[-1]}")
    policy_mask = policy_mask & torch.isfinite(policy).all(-1)
    baseline_mask = baseline_mask & torch.isfinite(baseline).all(-1)
    x = torch.nan_to_num(policy.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    y = torch.nan_to_num(baseline.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    xs, xm, ys, ym, active = GROUPINGS[grouping](x, policy_mask, y, baseline_mask)
    phi = torch.zeros(policy.shape[:2], dtype=x.dtype, device=x.device)
    valid = policy_mask & active[:, None]
    if not active.any():
        return Potentials(phi, valid, active, x.new_zeros(()))
    if grouping == "pooled":  # only active prompts' samples enter the pooled cloud
        xm = valid.reshape(1, -1)
    base = xm.to(x.dtype).requires_grad_(True)
    b_w = ym.to(y.dtype)
    with torch.enable_grad():
        values = violation((xs, base), (ys, b_w))
        (grad,) = torch.autograd.grad(values.sum(), base)
    values, base = values.detach(), base.detach()
    eps = ratio_from_value(violation, values, xs, base / base.sum(-1, keepdim=True), ys,
                           b_w / b_w.sum(-1, keepdim=True))
    value = values.sum()
    grad = grad * xm.sum(-1, keepdim=True).to(x.dtype) * xm.to(x.dtype)
    if grouping == "pooled":
        phi = grad.reshape(phi.shape)
    else:
        phi[active] = grad
    phi = torch.where(valid, phi, torch.zeros_like(phi))
    if not torch.isfinite(phi).all():
        raise FloatingPointError("the estimator returned non-finite potentials; check the estimator parameters "
                                 "(e.g. a too-small sinkhorn reg) and the reward scale")
    return Potentials(phi.detach(), valid, active, value.detach(), None if eps is None else eps.detach())


def advantages_from_potentials(phi: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``A_ij = -(phi_ij - mean_{j valid} phi_ij)``, 0 for invalid samples. ``phi, valid: (B, G)``.

    This is what TRL's GRPO computes from the returned reward ``-phi`` with
    ``scale_rewards="none"`` (group mean over non-NaN rewards; masked samples return ``None`` and get
    ``nan_to_num(NaN) = 0``), written out for tests and for trainers that do not use TRL.
    """
    v = valid.to(phi.dtype)
    mean = (phi * v).sum(-1, keepdim=True) / v.sum(-1, keepdim=True).clamp_min(1.0)
    return torch.where(valid, -(phi - mean), torch.zeros_like(phi))
