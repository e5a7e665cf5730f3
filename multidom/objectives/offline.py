"""Offline multi-reward dominance (DESIGN.md §3.3).

Data: ``B`` prompts, each with ``K >= 2`` candidate responses and a reward vector ``r_ik in R^d``
per response. The policy's distribution over the candidates of prompt ``i`` is
``w_ik = softmax_k(beta * logratio_ik)`` (for ``K = 2`` this is DPO's sigmoid,
``w_i1 = sigmoid(beta (logratio_i1 - logratio_i2))``, Rafailov et al. arXiv 2305.18290; ``beta`` keeps
TRL's meaning, the DPO temperature). The **positive** cloud holds every candidate's reward vector with
weight ``w_ik / B``; the **negative** cloud holds the same points with the reference's uniform weights
``1 / (B K)``. The loss is ``D(P_θ ≽ Q)`` (Rioux et al., arXiv 2406.06425) as defined by the
:class:`~multidom.core.spec.DominanceSpec`; the gradient reaches the policy through the weights (the
weight gradient of ``D`` is the Kantorovich potential of each candidate, DESIGN.md §2).

As ``beta -> 0`` the policy weights stay uniform (the reference); as ``beta`` grows small log-ratio
changes move a lot of mass.

Departures: not in either paper as such; it combines DPO's implicit candidate distribution with
the multivariate violation of arXiv 2406.06425. Attributes are normalised (``spec.normalisation``,
z-score by default) on the negative cloud -- the batch's points with uniform weights -- so that one
cost fits all attributes.

At the start of training the policy equals the reference, so both clouds coincide: a kink of the
unregularised violation as a function of the weights (the library returns the mean of the one-sided
derivatives there; tests/objectives/test_offline.py checks that it points to the dominating
candidates). ``sinkhorn`` (smooth in the weights) is the default estimator (:data:`OFFLINE_SPEC`).
"""
from __future__ import annotations

from typing import Any

import torch

from multidom.core.normalize import Normalizer
from multidom.core.spec import DominanceSpec

__all__ = ["OFFLINE_SPEC", "candidate_weights", "offline_dominance_loss"]

#: Default spec of the offline objective: entropic OT with the logistic cost on z-scored rewards.
OFFLINE_SPEC = DominanceSpec(estimator="sinkhorn", cost="logistic", normalisation="zscore")


def candidate_weights(logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """``w_ik = softmax_k(beta * logratio_ik)``; ``logratios: (B, K)`` -> ``(B, K)``, rows sum to one."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta must be a number > 0, got {beta!r}")
    return torch.softmax(beta * logratios, dim=-1)


def offline_dominance_loss(
    logratios: torch.Tensor,
    rewards: torch.Tensor,
    *,
    beta: float = 1.0,
    spec: DominanceSpec = OFFLINE_SPEC,
    **option_overrides: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``D(P_θ ≽ Q)`` for candidates weighted by the policy versus the reference (DESIGN.md §3.3).

    Args:
        logratios: ``(B, K)`` ``log π_θ(y_ik|x_i) - log π_ref(y_ik|x_i)``, ``K >= 2``.
        rewards: ``(B, K, d)`` reward vectors, higher is better on every attribute.
        beta: softmax gain of the candidate weights (the DPO temperature, see module doc).
        spec: the violation (estimator, cost, gain, margin, options, normalisation).
        option_overrides: per-call estimator options (e.g. the sliced ``seed`` of this step).
    Returns:
        ``(loss, stats)``: the 0-dim violation, and detached ``stats`` with ``kl`` (mean over
        prompts of ``KL(w_i || uniform)``), ``eps`` (``D(P≽Q) / (D(P≽Q) + D(Q≽P))``)
        and ``policy_reward_mean`` ``(d,)`` (the policy-weighted mean of the raw rewards).
    """
    if logratios.dim() != 2:
        raise ValueError(f"logratios must have shape (B, K), got {tuple(logratios.shape)}")
    batch, k = logratios.shape
    if k < 2:
        raise ValueError(f"offline dominance needs K >= 2 candidates per prompt, got K = {k}")
    if rewards.dim() != 3 or rewards.shape[:2] != logratios.shape:
        raise ValueError(f"rewards must have shape (B, K, d) = ({batch}, {k}, d), got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; drop or impute those candidates first")
    w = candidate_weights(logratios, beta)  # (B, K)
    raw = rewards.reshape(batch * k, -1).to(logratios.dtype)
    points = Normalizer.fit(spec.normalisation, raw.detach())(raw.detach())  # fitted on the negative cloud
    positive = (points, w.reshape(-1) / batch)
    negative = (points, torch.full_like(positive[1], 1.0 / (batch * k)))
    loss = spec.violation(positive, negative, **option_overrides)
    with torch.no_grad():
        kl = (w * (torch.log(w.clamp_min(1e-30)) + torch.log(torch.tensor(float(k))))).sum(-1).mean()
        ratio = spec.violation_ratio((points, positive[1].detach()), negative, **option_overrides)
        reward_mean = (w[..., None] * rewards).sum(1).mean(0)
    return loss, {"kl": kl, "eps": ratio, "policy_reward_mean": reward_mean}
