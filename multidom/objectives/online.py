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
``pooled`` compares the whole batch's clouds (marginal dominance). Normalisation
(``spec.normalisation``, :mod:`multidom.core.normalize`): attributes are mapped through a monotone
per-attribute transform fitted on the baseline, so one cost, gain and ``reg`` fit all attributes;
monotone increasing maps preserve dominance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from multidom.core.normalize import normalise_pair
from multidom.core.spec import DominanceSpec

__all__ = [
    "GROUPINGS",
    "Potentials",
    "advantages_from_potentials",
    "dominance_potentials",
]


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
            pooled) from the same solve (:meth:`DominanceSpec.ratio_from_value`), or ``None`` when the
            cost has no tie slope.
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
    spec: DominanceSpec,
    grouping: str = "per_prompt",
    **option_overrides: Any,
) -> Potentials:
    """Per-sample potentials ``phi = n * dD(P ≽ Q)/dw`` by autograd through ``spec.violation``.

    ``D`` is convex and piecewise linear in the weights for ``quantile`` and ``sliced``; at equal cloud
    sizes every cumulative weight ``i/G`` ties with a ``j/M`` and the potentials are not unique.
    :func:`multidom.core.ot1d.ot1d` then returns the mean of the two one-sided derivatives (a subgradient in
    the middle of the dual set), so one autograd pass at ``w = 1`` is all this needs.

    Args:
        policy: ``(B, G, d)`` policy reward vectors (raw; normalised here by ``spec.normalisation``,
            fitted on the valid baseline points).
        policy_mask: ``(B, G)`` bool, False for samples the bank masked (they get weight 0).
        baseline: ``(B, M, d)`` baseline reward vectors of each prompt (padding allowed).
        baseline_mask: ``(B, M)`` bool, False for padding / masked baseline points.
        spec: the dominance spec (estimator, cost, gain, margin, options, normalisation).
        grouping: key of :data:`GROUPINGS`.
        option_overrides: per-call estimator options (the sliced ``seed`` of this step).
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
    if baseline_mask.any() and policy_mask.any():
        policy, baseline = normalise_pair(policy.detach(), baseline.detach(), baseline_mask, spec.normalisation)
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
        values = spec.violation((xs, base), (ys, b_w), **option_overrides)
        (grad,) = torch.autograd.grad(values.sum(), base)
    values, base = values.detach(), base.detach()
    eps = spec.ratio_from_value(values, (xs, base), (ys, b_w), **option_overrides)
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
