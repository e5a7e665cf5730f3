"""Figures of an evaluation report (matplotlib, Agg backend: no display needed).

* :func:`plot_quantiles`: per attribute, the quantile function ``t -> Q_m(t)`` of every model.
  In one dimension, ``P ≽ Q`` iff ``Q_P(t) >= Q_Q(t)`` for all ``t`` (DESIGN.md §1): a curve that
  stays above another is a model that dominates on that attribute.
* :func:`plot_scatter`: the reward clouds of the models on each pair of attributes.
* :func:`plot_eps`: heat map of the ``eps`` matrix of one estimator (row ``i`` small = ``i`` dominates).
* :func:`plot_training`: the violation ratio and the per-attribute reward means over training steps,
  from a run's ``metrics.jsonl`` (metric names of STYLE.md §9).
"""
from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_quantiles", "plot_scatter", "plot_eps", "plot_training"]

_EPS_KEY = re.compile(r"^dominance/([^/]+)/eps$")
_MEAN_KEY = re.compile(r"^rewards/(.+)/mean$")

_MAX_PAIRS = 6


def _grid(n: int, size: float = 3.2) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def plot_quantiles(values: Mapping[str, np.ndarray], attributes: Sequence[str], path: str | os.PathLike) -> Path:
    """Quantile curves: ``values[model]`` is ``(n, d)`` (NaN rows ignored per attribute)."""
    fig, axes = _grid(len(attributes))
    t = np.linspace(0.0, 1.0, 101)
    for j, (ax, attr) in enumerate(zip(axes, attributes)):
        for model, v in values.items():
            col = v[:, j][~np.isnan(v[:, j])]
            if col.size:
                ax.plot(t, np.quantile(col, t), label=model)
        ax.set_title(attr, fontsize=9)
        ax.set_xlabel("quantile level t")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("reward quantile Q(t)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Per-attribute quantile curves (higher curve dominates)", fontsize=10)
    return _save(fig, path)


def plot_scatter(values: Mapping[str, np.ndarray], attributes: Sequence[str], path: str | os.PathLike) -> Path:
    """Pairwise scatter of the clouds on up to six attribute pairs (a histogram when ``d = 1``)."""
    pairs = list(itertools.combinations(range(len(attributes)), 2))[:_MAX_PAIRS]
    if not pairs:
        fig, axes = _grid(1)
        for model, v in values.items():
            col = v[:, 0][~np.isnan(v[:, 0])]
            axes[0].hist(col, bins=30, alpha=0.5, label=model)
        axes[0].set_xlabel(attributes[0])
        axes[0].legend(fontsize=8)
        return _save(fig, path)
    fig, axes = _grid(len(pairs))
    for ax, (a, b) in zip(axes, pairs):
        for model, v in values.items():
            ok = ~np.isnan(v[:, a]) & ~np.isnan(v[:, b])
            ax.scatter(v[ok, a], v[ok, b], s=6, alpha=0.45, label=model)
        ax.set_xlabel(attributes[a], fontsize=8)
        ax.set_ylabel(attributes[b], fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, markerscale=2)
    fig.suptitle("Reward clouds, pairs of attributes (up and right is better)", fontsize=10)
    return _save(fig, path)


def plot_eps(eps: Sequence[Sequence[float]], models: Sequence[str], title: str, path: str | os.PathLike) -> Path:
    """Heat map of ``eps[i][j] = eps(model_i ≽ model_j)`` with the values written in the cells."""
    m = np.asarray(eps, dtype=float)
    size = 1.2 + 0.9 * len(models)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="RdYlGn_r")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    for i, j in itertools.product(range(len(models)), repeat=2):
        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("j (dominated)")
    ax.set_ylabel("i (dominating)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_training(rows: Sequence[Mapping[str, object]], path: str | os.PathLike) -> Path | None:
    """``dominance/<estimator>/eps`` and ``rewards/<attribute>/mean`` against ``step`` (None if absent)."""
    def series(pattern: re.Pattern) -> dict[str, tuple[list, list]]:
        out: dict[str, tuple[list, list]] = {}
        for row in rows:
            for key, value in row.items():
                m = pattern.match(key)
                if m and isinstance(value, (int, float)) and "step" in row and not m.group(1).startswith("dominance"):
                    xs, ys = out.setdefault(m.group(1), ([], []))
                    xs.append(row["step"])
                    ys.append(value)
        return out

    eps, means = series(_EPS_KEY), series(_MEAN_KEY)
    if not eps and not means:
        return None
    fig, axes = _grid(2, size=4.0)
    for name, (xs, ys) in eps.items():
        axes[0].plot(xs, ys, marker=".", label=name)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].set_title("violation ratio eps(policy ≽ baseline)", fontsize=9)
    for name, (xs, ys) in means.items():
        axes[1].plot(xs, ys, marker=".", label=name)
    axes[1].set_title("reward means (policy)", fontsize=9)
    for ax in axes[:2]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
