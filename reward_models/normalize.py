"""Per-attribute normalisation of reward clouds against a reference (baseline) cloud (DESIGN.md §3.2).

Both maps are non-decreasing per attribute, so they preserve (multivariate, first-order) dominance:
if ``X >= Y`` coordinate-wise then ``T(X) >= T(Y)`` for ``T`` applied attribute by attribute.

* ``zscore``: ``T_k(x) = (x - mu_k) / sigma_k`` with the reference mean and (population) standard deviation;
  ``sigma_k = 1`` for a constant attribute.
* ``cdf``: ``T_k(x) = (#{r in R_k : r < x} + #{r in R_k : r <= x}) / (2 |R_k|)``, the mid-rank empirical CDF of
  the reference values ``R_k``, in ``[0, 1]`` (ties count half, so ``T_k`` of a reference point is its
  mid-rank quantile).

Statistics are fitted on the finite entries of each column (NaN = masked sample) and saved as JSON (no pickle).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["Normalizer", "NORMALIZERS"]

_FORMAT = 1


def _finite_columns(values: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    cols = []
    for k, name in enumerate(names):
        col = values[:, k].double()
        col = col[torch.isfinite(col)]
        if col.numel() == 0:
            raise ValueError(f"normaliser: attribute {name!r} has no finite value in the reference cloud")
        cols.append(col)
    return cols


def _fit_zscore(cols: list[torch.Tensor]) -> dict[str, list[float]]:
    mean = [c.mean().item() for c in cols]
    std = [c.std(unbiased=False).item() for c in cols]
    return {"mean": mean, "std": [s if s > 1e-12 else 1.0 for s in std]}


def _apply_zscore(values: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
    mean = torch.tensor(stats["mean"], dtype=torch.float64)
    std = torch.tensor(stats["std"], dtype=torch.float64)
    return (values.double() - mean) / std


def _fit_cdf(cols: list[torch.Tensor]) -> dict[str, list[list[float]]]:
    return {"sorted": [torch.sort(c).values.tolist() for c in cols]}


def _apply_cdf(values: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
    out = torch.empty(values.shape, dtype=torch.float64)
    for k, ref in enumerate(stats["sorted"]):
        r = torch.tensor(ref, dtype=torch.float64)
        x = values[:, k].double().contiguous()
        below = torch.searchsorted(r, x, right=False)
        upto = torch.searchsorted(r, x, right=True)
        col = (below + upto).double() / (2 * len(ref))
        out[:, k] = torch.where(torch.isnan(x), x, col)
    return out


# method -> (fit, apply); a new normalisation is a new entry.
NORMALIZERS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[..., torch.Tensor]]] = {
    "zscore": (_fit_zscore, _apply_zscore),
    "cdf": (_fit_cdf, _apply_cdf),
}


class Normalizer:
    """A fitted per-attribute normalisation: ``method``, attribute ``names`` and JSON-able ``stats``."""

    def __init__(self, method: str, names: Sequence[str], stats: dict[str, Any]) -> None:
        if method not in NORMALIZERS:
            raise ValueError(f"unknown normalisation {method!r}; choose from {', '.join(NORMALIZERS)}")
        self.method, self.names, self.stats = method, tuple(names), stats

    @classmethod
    def fit(cls, method: str, values: torch.Tensor, names: Sequence[str]) -> Normalizer:
        """Fit on a reference cloud ``values: (m, d)`` (oriented; NaN entries ignored per attribute)."""
        if method not in NORMALIZERS:
            raise ValueError(f"unknown normalisation {method!r}; choose from {', '.join(NORMALIZERS)}")
        values = torch.as_tensor(values)
        if values.ndim != 2 or values.shape[1] != len(names):
            raise ValueError(
                f"normaliser: reference values must have shape (m, {len(names)}) for attributes {list(names)}, "
                f"got {tuple(values.shape)}"
            )
        return cls(method, names, NORMALIZERS[method][0](_finite_columns(values, names)))

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """``values: (n, d)`` -> normalised ``(n, d)`` float64 (NaN stays NaN)."""
        return NORMALIZERS[self.method][1](values, self.stats)

    def save(self, path: str | Path) -> None:
        payload = {"format": _FORMAT, "method": self.method, "names": list(self.names), "stats": self.stats}
        text = json.dumps(payload, allow_nan=False)
        Path(path).write_text(text)

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
