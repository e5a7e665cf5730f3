"""What the online dominance trainer logs (STYLE.md §9 metric names), kept apart from the wiring.

* ``rewards/<attribute>/{mean,q10,q50,q90}`` for the policy cloud and
  ``rewards/<attribute>/baseline_{mean,q10,q50,q90}`` for the baseline cloud (raw, un-normalised);
* ``dominance/<estimator>/eps`` (violation ratio ``eps(policy ≽ baseline)``, averaged over prompts
  for ``per_prompt`` grouping), ``dominance/<estimator>/violation``;
* ``dominance/masked_fraction``, ``dominance/skipped_prompts``, ``timing/rewards_s`` (reward bank),
  ``timing/dominance_s`` (normalisation + potentials, the estimator's share of the step) and
  ``timing/eps_s`` (extra solves for logged ratios: the other estimators every ``all_estimators_steps``);
* a scatter plot of the two clouds (PNG under ``<output_dir>/plots``, and a ``wandb.Image``) and a
  ``wandb.Table`` of sample completions with their reward vectors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["cloud_stats", "eps_per_prompt", "scatter_clouds", "log_wandb"]

QUANTILES = {"q10": 0.1, "q50": 0.5, "q90": 0.9}


def cloud_stats(points: torch.Tensor, names: Sequence[str], prefix: str = "") -> dict[str, float]:
    """Mean and quantiles per attribute of ``points (n, d)`` (valid rows only) as metric names."""
    out: dict[str, float] = {}
    if points.shape[0] == 0:
        return out
    q = torch.quantile(points.double(), torch.tensor(list(QUANTILES.values()), dtype=torch.float64), dim=0)
    mean = points.double().mean(0)
    for k, name in enumerate(names):
        out[f"rewards/{name}/{prefix}mean"] = float(mean[k])
        for j, stat in enumerate(QUANTILES):
            out[f"rewards/{name}/{prefix}{stat}"] = float(q[j, k])
    return out


def eps_per_prompt(
    x: torch.Tensor, xm: torch.Tensor, y: torch.Tensor, ym: torch.Tensor, spec: Any, grouping: str,
    **option_overrides: Any,
) -> float:
    """``eps(policy ≽ baseline)``: mean over active prompts (per_prompt) or on the pooled clouds.

    ``x: (B, G, d)``, ``xm: (B, G)``, ``y: (B, M, d)``, ``ym: (B, M)`` (raw points, bool masks);
    normalised by ``spec.normalisation`` on the valid baseline points as the potentials are.
    """
    from multidom.core.normalize import normalise_pair

    x, y = normalise_pair(x, y, ym, spec.normalisation)
    if grouping == "pooled":
        xs, ys = x[xm][None], y[ym][None]
        if xs.shape[1] == 0 or ys.shape[1] == 0:
            return float("nan")
        return float(spec.violation_ratio(xs, ys, **option_overrides).mean())
    x, y = torch.nan_to_num(x), torch.nan_to_num(y)  # masked points carry weight 0
    active = xm.any(-1) & ym.any(-1)
    if not active.any():
        return float("nan")
    pos = (x[active], xm[active].to(x.dtype))
    neg = (y[active], ym[active].to(y.dtype))
    return float(spec.violation_ratio(pos, neg, **option_overrides).mean())


def scatter_clouds(
    policy: torch.Tensor, baseline: torch.Tensor, names: Sequence[str], path: str | Path, step: int
) -> Path:
    """Scatter of the raw clouds on every pair of attributes (at most 3 pairs); saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = len(names)
    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)][:3] or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 4), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs):
        ax.scatter(baseline[:, i], baseline[:, j], s=8, alpha=0.5, label="baseline", color="tab:gray")
        ax.scatter(policy[:, i], policy[:, j], s=8, alpha=0.5, label="policy", color="tab:blue")
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
    axes[0][0].legend(loc="best")
    fig.suptitle(f"reward clouds, step {step}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def log_wandb(
    step: int, plot: Path | None, prompts: Sequence[Any], completions: Sequence[Any], values: torch.Tensor,
    names: Sequence[str], advantages: Sequence[float | None],
) -> bool:
    """Log the plot and a table of samples to the active wandb run; False when no run is active."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return False
    columns = ["step", "prompt", "completion", *names, "advantage"]
    table = wandb.Table(columns=columns)
    for p, c, v, a in zip(prompts, completions, values.tolist(), advantages):
        table.add_data(step, str(p), str(c), *v, a)
    payload: dict[str, Any] = {"dominance/samples": table}
    if plot is not None:
        payload["dominance/clouds"] = wandb.Image(str(plot))
    wandb.log(payload, commit=False)
    return True
