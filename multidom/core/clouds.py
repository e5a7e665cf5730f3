"""Reward clouds: validation of user input and the result type every estimator returns.

A cloud is a tensor of points ``(..., n, d)`` (uniform weights) or a pair
``(points (..., n, d), weights (..., n))``. Weights must be finite, ``>= 0``, with a positive
sum over ``n``; they are normalised to sum to one (the normalisation is differentiable, so the
gradient with respect to raw weights is the centred potential).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

__all__ = ["CloudLike", "ViolationResult", "as_cloud", "check_pair"]

CloudLike = Union[torch.Tensor, Sequence[torch.Tensor]]


@dataclass
class ViolationResult:
    """What an estimator returns for ``D(P ≽ Q)``; every tensor has the batch shape ``(...)`` first.

    Attributes:
        value: ``(...)`` the violation (the entropic objective for ``sinkhorn``, including
            ``reg * KL``).
        transport: ``(...)`` the transport part ``<pi, C>`` (equals ``value`` when unregularised).
        plan: ``(..., n, m)`` the coupling, when the estimator has one and it was asked for.
        f: ``(..., n)`` dual potential of the positive points, when available.
        g: ``(..., m)`` dual potential of the negative points, when available.
        marginal_error: ``(...)`` L1 marginal error of the plan, for iterative solvers
            (``sinkhorn``); ``None`` for the exact ones.
        iterations: iterations the solver ran (``sinkhorn``), else ``None``.
    """

    value: torch.Tensor
    transport: torch.Tensor
    plan: torch.Tensor | None = None
    f: torch.Tensor | None = None
    g: torch.Tensor | None = None
    marginal_error: torch.Tensor | None = None
    iterations: int | None = None


def as_cloud(cloud: CloudLike, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(points (..., n, d), weights (..., n))`` with weights summing to one.

    Raises:
        ValueError: wrong rank, empty cloud, NaN/inf points, negative/NaN weights or an all-zero
            weight vector, weights whose shape does not match the points. ``name`` is used in the
            message ("positive" / "negative").
    """
    if isinstance(cloud, torch.Tensor):
        points, weights = cloud, None
    elif isinstance(cloud, (tuple, list)) and len(cloud) == 2:
        points, weights = cloud
    else:
        raise ValueError(f"{name} cloud must be a tensor of points (..., n, d) or a (points, weights) pair")
    points = torch.as_tensor(points)
    if not points.is_floating_point():
        points = points.to(torch.get_default_dtype())
    if points.dim() < 2:
        raise ValueError(f"{name} points must have shape (..., n, d), got {tuple(points.shape)}")
    n, d = points.shape[-2], points.shape[-1]
    if n == 0:
        raise ValueError(f"{name} cloud is empty (n = 0)")
    if d == 0:
        raise ValueError(f"{name} cloud has no attributes (d = 0)")
    if not torch.isfinite(points).all():
        raise ValueError(f"{name} points contain NaN or inf; mask those samples out (weight 0 or drop them)")
    if weights is None:
        weights = torch.full(points.shape[:-1], 1.0 / n, dtype=points.dtype, device=points.device)
        return points, weights
    weights = torch.as_tensor(weights, dtype=points.dtype, device=points.device)
    if weights.shape != points.shape[:-1]:
        raise ValueError(
            f"{name} weights have shape {tuple(weights.shape)}, expected {tuple(points.shape[:-1])}"
        )
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{name} weights must be finite and >= 0")
    total = weights.sum(-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError(f"{name} weights are all zero (in at least one batch entry)")
    return points, weights / total


def check_pair(
    positive: CloudLike, negative: CloudLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate both clouds together: ``(x, a, y, b)`` with matching ``d`` and batch shapes.

    Batch shapes must be equal (no broadcasting, so a mistake cannot pass silently); dtypes are
    promoted to a common floating type.
    """
    x, a = as_cloud(positive, "positive")
    y, b = as_cloud(negative, "negative")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"attribute counts differ: positive cloud has d = {x.shape[-1]}, negative has d = {y.shape[-1]}"
        )
    if x.shape[:-2] != y.shape[:-2]:
        raise ValueError(
            f"batch shapes differ: positive {tuple(x.shape[:-2])}, negative {tuple(y.shape[:-2])}"
        )
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), a.to(dtype), y.to(dtype), b.to(dtype)
