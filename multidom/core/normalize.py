"""Per-attribute normalisation of reward clouds against a reference (negative / baseline) cloud.

The one normaliser of multidom: the reward bank, the online and offline trainers and evaluation all
fit it on the cloud that must be dominated and apply it to both clouds (DESIGN.md §3.2). Every map is
non-decreasing per attribute, so it preserves (multivariate, first-order) dominance: if ``X >= Y``
coordinate-wise then ``T(X) >= T(Y)``.

==========  ==========================================================================================
name        ``T_k(x)``
==========  ==========================================================================================
``zscore``  ``(x - mu_k) / sigma_k``, reference mean and population std; ``sigma_k`` below
            :data:`STD_FLOOR` counts as a constant attribute, which is only centred (``sigma_k = 1``)
``cdf``     ``(#{r < x} + #{r <= x}) / (2 |R_k|)``, the mid-rank empirical CDF of the reference values
``none``    ``x``
==========  ==========================================================================================

Statistics are fitted on the finite entries of each attribute (NaN = a masked sample) and can be
saved as JSON (no pickle); NaN stays NaN when applied. Imports only torch.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["Normalizer", "NORMALISATIONS", "STD_FLOOR", "normalise_pair"]

STD_FLOOR = 1e-6
"""A reference standard deviation at or below this is a constant attribute (centred, not scaled)."""

_FORMAT = 1


def _finite_columns(values: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    cols = []
    for k, name in enumerate(names):
        col = values[..., k].reshape(-1).double()
        col = col[torch.isfinite(col)]
        if col.numel() == 0:
            raise ValueError(f"normaliser: attribute {name!r} has no finite value in the reference cloud")
        cols.append(col)
    return cols


def _fit_zscore(cols: list[torch.Tensor]) -> dict[str, list[float]]:
    mean = [c.mean().item() for c in cols]
    std = [c.std(unbiased=False).item() for c in cols]
    return {"mean": mean, "std": [s if s > STD_FLOOR else 1.0 for s in std]}


def _apply_zscore(values: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
    mean = torch.tensor(stats["mean"], dtype=torch.float64, device=values.device)
    std = torch.tensor(stats["std"], dtype=torch.float64, device=values.device)
    return (values.double() - mean) / std


def _fit_cdf(cols: list[torch.Tensor]) -> dict[str, list[list[float]]]:
    return {"sorted": [torch.sort(c).values.tolist() for c in cols]}


def _apply_cdf(values: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
    out = torch.empty(values.shape, dtype=torch.float64, device=values.device)
    for k, ref in enumerate(stats["sorted"]):
        r = torch.tensor(ref, dtype=torch.float64, device=values.device)
        x = values[..., k].double().contiguous()
        below = torch.searchsorted(r, x, right=False)
        upto = torch.searchsorted(r, x, right=True)
        col = (below + upto).double() / (2 * len(ref))
        out[..., k] = torch.where(torch.isnan(x), x, col)
    return out


def _fit_none(cols: list[torch.Tensor]) -> dict[str, Any]:
    return {}


def _apply_none(values: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
    return values.double()


#: name -> (fit on the reference columns, apply); a new normalisation is a new entry.
NORMALISATIONS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[..., torch.Tensor]]] = {
    "zscore": (_fit_zscore, _apply_zscore),
    "cdf": (_fit_cdf, _apply_cdf),
    "none": (_fit_none, _apply_none),
}


def _check_method(method: str) -> None:
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose from {', '.join(NORMALISATIONS)}")


class Normalizer:
    """A fitted per-attribute normalisation: ``method``, attribute ``names`` and JSON-able ``stats``."""

    def __init__(self, method: str, names: Sequence[str], stats: dict[str, Any]) -> None:
        _check_method(method)
        self.method, self.names, self.stats = method, tuple(names), stats

    @classmethod
    def fit(cls, method: str, values: torch.Tensor, names: Sequence[str] | None = None) -> Normalizer:
        """Fit on a reference cloud ``values: (..., m, d)`` (NaN entries ignored per attribute).

        ``names`` default to ``attr0 .. attr{d-1}``.
        """
        _check_method(method)
        values = torch.as_tensor(values)
        if values.ndim < 2:
            raise ValueError(f"normaliser: reference values must have shape (..., m, d), got {tuple(values.shape)}")
        names = [f"attr{k}" for k in range(values.shape[-1])] if names is None else list(names)
        if values.shape[-1] != len(names):
            raise ValueError(
                f"normaliser: reference values must have shape (m, {len(names)}) for attributes {list(names)}, "
                f"got {tuple(values.shape)}"
            )
        return cls(method, names, NORMALISATIONS[method][0](_finite_columns(values, names)))

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """``values: (..., d)`` -> normalised, same shape and dtype as the input (NaN stays NaN)."""
        values = torch.as_tensor(values)
        dtype = values.dtype if values.is_floating_point() else torch.float64
        return NORMALISATIONS[self.method][1](values, self.stats).to(dtype)

    def save(self, path: str | Path) -> None:
        payload = {"format": _FORMAT, "method": self.method, "names": list(self.names), "stats": self.stats}
        Path(path).write_text(json.dumps(payload, allow_nan=False))

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        payload = json.loads(Path(path).read_text())
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a multidom normalisation file (format {_FORMAT})")
        stats = payload["stats"]
        flat = [v for vs in stats.values() for v in (vs if isinstance(vs, list) else [vs])]
        if any(isinstance(v, float) and not math.isfinite(v) for v in flat):
            raise ValueError(f"{path}: non-finite statistics")
        return cls(payload["method"], payload["names"], stats)


def normalise_pair(
    positive: torch.Tensor, negative: torch.Tensor, negative_mask: torch.Tensor | None, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit on the valid points of the negative cloud, apply to both clouds.

    Args:
        positive: ``(..., n, d)`` (NaN allowed where masked; NaN stays NaN).
        negative: ``(..., m, d)``.
        negative_mask: ``(..., m)`` bool, True for valid negative points (``None``: all finite rows).
            The statistics pool every valid negative point of the batch (a per-prompt std from a few
            points would be noise).
        method: a key of :data:`NORMALISATIONS`.
    Returns:
        ``(positive', negative')`` with the input shapes and dtypes.
    """
    _check_method(method)
    if negative_mask is None:
        negative_mask = torch.isfinite(negative).all(-1)
    reference = negative[negative_mask]
    if reference.shape[0] == 0:
        raise ValueError("the baseline cloud has no valid point; cannot normalise against it")
    norm = Normalizer.fit(method, reference)
    return norm(positive), norm(negative)
