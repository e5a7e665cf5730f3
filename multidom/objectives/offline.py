"""Offline multi-reward dominance (DESIGN.md §3.3).

Data: ``B`` prompts, each with ``K >= 2`` candidate responses and a reward vector ``r_ik in R^d``
per response. The policy's distribution over the candidates of prompt ``i`` is
``w_ik = softmax_k(beta * logratio_ik)`` (for ``K = 2`` this is DPO's sigmoid,
``w_i1 = sigmoid(beta (logratio_i1 - logratio_i2))``, Rafailov et al. arXiv 2305.18290). The
**positive** cloud holds every candidate's reward vector with weight ``w_ik / B``; the
**negative** cloud holds the same points with the reference's uniform weights ``1 / (B K)``.
The loss is ``D(P_θ ≽ Q)`` (Rioux et al., arXiv 2406.06425) with any estimator of
:func:`multidom.violation`; the gradient reaches the policy through the weights (the weight
gradient of ``D`` is the Kantorovich potential of each candidate, DESIGN.md §2).

``beta`` plays the role of the KL strength: as ``beta -> 0`` the policy weights stay uniform
(the reference), as ``beta`` grows small log-ratio changes move a lot of mass.

Departures: not in either paper as such; it combines DPO's implicit candidate distribution with
the multivariate violation of arXiv 2406.06425. Attributes are z-scored on the batch's points
(uniform weights) by default so that one cost and one ``beta`` fit all attributes; a constant
attribute (zero spread) is left centred but unscaled.

At the start of training the policy equals the reference, so both clouds coincide: a kink of the
unregularised violation as a function of the weights (the library returns the mean of the one-sided
derivatives there; tests/test_offline.py checks that it points to the dominating candidates).
``sinkhorn`` (smooth in the weights) is the default.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["candidate_weights", "normalize_rewards", "offline_dominance_loss", "NORMALIZERS"]


def candidate_weights(logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """``w_ik = softmax_k(beta * logratio_ik)``; ``logratios: (B, K)`` -> ``(B, K)``, rows sum to one."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return torch.softmax(beta * logratios, dim=-1)


def _zscore(points: torch.Tensor) -> torch.Tensor:
    mean = points.mean(0, keepdim=True)
    std = points.std(0, unbiased=False, keepdim=True)
    return (points - mean) / torch.where(std > 0, std, torch.ones_like(std))


NORMALIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "zscore": _zscore,
    "none": lambda points: points,
}


def normalize_rewards(points: torch.Tensor, how: str) -> torch.Tensor:
    """Normalise ``points: (n, d)`` attribute by attribute with :data:`NORMALIZERS[how]`."""
    if how not in NORMALIZERS:
        raise ValueError(f"unknown reward normalisation {how!r}; valid: {', '.join(NORMALIZERS)}")
    return NORMALIZERS[how](points)


def offline_dominance_loss(
    logratios: torch.Tensor,
    rewards: torch.Tensor,
    *,
    beta: float = 1.0,
    estimator: str = "sinkhorn",
    cost: str = "logistic",
    cost_beta: float = 1.0,
    margin: float = 0.0,
    normalize: str = "zscore",
    **estimator_options: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``D(P_θ ≽ Q)`` for candidates weighted by the policy versus the reference (DESIGN.md §3.3).

    Args:
        logratios: ``(B, K)`` ``log π_θ(y_ik|x_i) - log π_ref(y_ik|x_i)``, ``K >= 2``.
        rewards: ``(B, K, d)`` reward vectors, higher is better on every attribute.
        beta: softmax gain of the candidate weights (the KL strength, see module doc).
        estimator: ``sinkhorn`` (default) | ``quantile`` | ``sliced`` | ``exact`` (:func:`multidom.violation`).
        cost, cost_beta, margin: the violation cost ``h`` and its gain / margin.
        normalize: ``zscore`` (default) or ``none``, applied to the ``B K`` points (no gradient).
        estimator_options: forwarded to :func:`multidom.violation` (``reg``, ``n_directions``, ...).
    Returns:
        ``(loss, stats)``: the 0-dim violation, and detached ``stats`` with ``kl`` (mean over
        prompts of ``KL(w_i || uniform)``), ``violation_ratio`` (``D(P≽Q) / (D(P≽Q) + D(Q≽P))``)
        and ``policy_reward_mean`` ``(d,)`` (the policy-weighted mean of the raw rewards).
    """
    import multidom

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
    points = normalize_rewards(rewards.reshape(batch * k, -1).to(logratios.dtype), normalize).detach()
    positive = (points, w.reshape(-1) / batch)
    negative = (points, torch.full_like(positive[1], 1.0 / (batch * k)))
    kw = dict(estimator=estimator, cost=cost, beta=cost_beta, margin=margin, **estimator_options)
    loss = multidom.violation(positive, negative, **kw)
    with torch.no_grad():
        kl = (w * (torch.log(w.clamp_min(1e-30)) + torch.log(torch.tensor(float(k))))).sum(-1).mean()
        ratio = multidom.violation_ratio((points, positive[1].detach()), negative, **kw)
        reward_mean = (w[..., None] * rewards).sum(1).mean(0)
    return loss, {"kl": kl, "violation_ratio": ratio, "policy_reward_mean": reward_mean}
