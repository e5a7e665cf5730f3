"""The numbers of an evaluation: per-attribute statistics, eps matrices, absolute and relative tests.

Input: for each of ``k`` models a reward tensor ``(B, G, d)`` -- ``B`` held-out prompts shared by
all models, ``G`` completions each, ``d`` attributes oriented higher-is-better (NaN = masked by the
bank). The first model is the **reference**.

* Per attribute and model: mean (with its bootstrap standard error over prompts), 10th, 50th and
  90th percentiles, and the difference of means to the reference with the standard error of that
  difference (prompts resampled jointly, so the pairing is kept).
* For each estimator (DESIGN.md §2): the matrix ``eps_ij = eps(model_i ≽ model_j)`` with bootstrap
  standard errors and percentile intervals (prompts resampled jointly across models:
  :func:`multidom.core.stats.bootstrap_eps`), the absolute test of ``H0: eps_ij >= eps0``
  (:func:`multidom.core.stats.absolute_test`) and the relative test's ranking
  (:func:`multidom.core.stats.relative_test`, Bonferroni, Borda) -- Nitsure et al. arXiv 2310.07132,
  Rioux et al. arXiv 2406.06425 §5.

Each comparison is defined by a :class:`~multidom.core.spec.DominanceSpec` (one per estimator
reported). Before the ratios, every attribute is normalised with the spec's normalisation fitted on the
reference model's cloud (:mod:`multidom.core.normalize`, z-score by default): one increasing map per
attribute shared by all models, so the dominance relation is unchanged and one cost fits every
attribute (DESIGN.md §3.2).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch

from multidom.core import stats
from multidom.core.normalize import Normalizer
from multidom.core.spec import DominanceSpec

__all__ = ["EvaluationResult", "evaluate", "attribute_stats", "EVAL_SPECS", "eval_specs"]

#: The specs evaluation reports by default (a bare estimator name in a config means its entry here). They use
#: the logistic cost, whose tests and intervals hold their level (:func:`multidom.core.stats.check_test_spec`,
#: experiments/calibration.py); a hinge spec still gives the point estimate (``eps = 0`` iff dominance) but
#: its tests are flagged as uncalibrated in the report. A bootstrap solves ``n_boot`` problems and eps needs
#: three or four digits, not the 1e-6 marginals of a training gradient: at B = 100 prompts x G = 8, d = 4
#: (float32, one thread) sinkhorn ``tol=1e-3`` took 0.25 s per replicate against 1.9 s at the solver's
#: default 1e-6, eps equal to 5 digits.
EVAL_SPECS: dict[str, DominanceSpec] = {
    "quantile": stats.TEST_DEFAULT,
    "sliced": stats.TEST_DEFAULT.replace(estimator="sliced"),
    "sinkhorn": stats.TEST_DEFAULT.replace(estimator="sinkhorn", options={"tol": 1e-3, "max_iter": 500}),
    "exact": stats.TEST_DEFAULT.replace(estimator="exact"),
}


def eval_specs(value: Any) -> list[DominanceSpec]:
    """Specs from a config value: a spec mapping, an estimator name (its :data:`EVAL_SPECS` entry), or a
    list of those; estimators must be distinct (results are keyed by estimator)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    specs = []
    for i, item in enumerate(items):
        where = f"dominance[{i}]" if isinstance(value, (list, tuple)) else "dominance"
        if isinstance(item, str):
            if item not in EVAL_SPECS:
                DominanceSpec(estimator=item)  # the unknown-estimator message with its suggestion
            specs.append(EVAL_SPECS[item])
        else:
            base = EVAL_SPECS.get(item.get("estimator", "quantile"), EVAL_SPECS["quantile"]) \
                if isinstance(item, Mapping) else None
            defaults = {k: v for k, v in base.to_dict().items() if k != "options"} if base else {}
            specs.append(DominanceSpec.from_mapping(item, where, **defaults))
    if not specs:
        raise ValueError("dominance: choose at least one estimator")
    names = [s.estimator for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"dominance: each estimator at most once (results are keyed by it), got {names}")
    return specs


@dataclass
class EvaluationResult:
    """Everything an evaluation report shows (JSON-able through :meth:`to_dict`).

    models: ``k`` names, the first is the reference; attributes: ``d`` names;
    stats: ``{model: {attribute: {mean, se, q10, q50, q90, delta, delta_se, n}}}``;
    dominance: ``{estimator: {eps, se, low, high (k x k lists), absolute: {...}, relative: {...}}}``;
    kl: ``{model: {kl, kl_se}}`` of each model to the reference (empty when unknown);
    settings: the options used; masked: ``{model: masked completions}``; dropped_prompts: count.
    """

    models: list[str]
    attributes: list[str]
    n_prompts: int
    G: int
    stats: dict[str, dict[str, dict[str, float]]]
    dominance: dict[str, dict[str, Any]]
    kl: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)
    dropped_prompts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_rewards(rewards: Mapping[str, torch.Tensor], attributes: Sequence[str]) -> dict[str, torch.Tensor]:
    if len(rewards) < 2:
        raise ValueError(f"an evaluation compares at least 2 models, got {len(rewards)}")
    out = {}
    for name, r in rewards.items():
        r = torch.as_tensor(r, dtype=torch.float64)
        if r.dim() != 3:
            raise ValueError(f"rewards of model {name!r} must have shape (B, G, d), got {tuple(r.shape)}")
        out[name] = r
    shapes = {tuple(r.shape) for r in out.values()}
    if len(shapes) != 1:
        raise ValueError(f"every model needs rewards of the same shape (B, G, d), got {sorted(shapes)}")
    if next(iter(shapes))[-1] != len(attributes):
        raise ValueError(f"{len(attributes)} attribute names for rewards with d = {next(iter(shapes))[-1]}")
    return out


def attribute_stats(
    rewards: Mapping[str, torch.Tensor], attributes: Sequence[str], *, n_boot: int = 200, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and attribute: mean, bootstrap se (prompts resampled), q10/q50/q90, and the
    difference of means to the first model with its paired bootstrap se.

    rewards: ``{model: (B, G, d)}`` with NaN for masked scores.
    """
    rewards = _check_rewards(rewards, attributes)
    B = next(iter(rewards.values())).shape[0]
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(B, (n_boot, B), generator=g)  # shared by all models: paired differences
    boot_means = {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, r in rewards.items():
        valid = ~torch.isnan(r)
        sums = torch.where(valid, r, 0.0).sum(1)  # (B, d)
        counts = valid.sum(1).double()  # (B, d)
        boot_means[name] = sums[index].sum(1) / counts[index].sum(1)  # (n_boot, d)
        flat = r.reshape(-1, r.shape[-1])
        out[name] = {}
        for j, attr in enumerate(attributes):
            col = flat[:, j][~torch.isnan(flat[:, j])]
            q = torch.quantile(col, torch.tensor([0.1, 0.5, 0.9], dtype=col.dtype)) if col.numel() else None
            out[name][attr] = {
                "mean": float(col.mean()) if col.numel() else float("nan"),
                "se": float(boot_means[name][:, j].std()),
                "q10": float(q[0]) if q is not None else float("nan"),
                "q50": float(q[1]) if q is not None else float("nan"),
                "q90": float(q[2]) if q is not None else float("nan"),
                "n": int(col.numel()),
            }
    ref = next(iter(rewards))
    for name in rewards:
        for j, attr in enumerate(attributes):
            entry = out[name][attr]
            entry["delta"] = entry["mean"] - out[ref][attr]["mean"]
            entry["delta_se"] = float((boot_means[name][:, j] - boot_means[ref][:, j]).std())
    return out


def _clouds(rewards: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], Any, dict[str, int], int]:
    """Clouds for :func:`multidom.core.stats.bootstrap_eps`: ``(B, G, d)`` each when nothing is masked,
    else flat valid rows ``(n_m, d)`` with per-model prompt ids; prompts where some model has no
    valid completion are dropped for every model (joint resampling needs the same prompts)."""
    masked = {name: int(torch.isnan(r).any(-1).sum()) for name, r in rewards.items()}
    if not any(masked.values()):
        return list(rewards.values()), None, masked, 0
    row_ok = {name: ~torch.isnan(r).any(-1) for name, r in rewards.items()}  # (B, G)
    keep = torch.stack([ok.any(-1) for ok in row_ok.values()]).all(0)  # (B,)
    if not keep.any():
        raise ValueError("every prompt has a model with no valid (unmasked) completion; nothing to compare")
    points, groups = [], []
    for name, r in rewards.items():
        ok = row_ok[name] & keep[:, None]
        points.append(r[ok])
        groups.append(torch.arange(r.shape[0])[:, None].expand_as(ok)[ok])
    return points, groups, masked, int((~keep).sum())


def evaluate(
    rewards: Mapping[str, torch.Tensor],
    attributes: Sequence[str],
    *,
    specs: Sequence[DominanceSpec] = (EVAL_SPECS["quantile"],),
    eps0: float = 0.4,
    alpha: float = 0.05,
    level: float = 0.9,
    n_boot: int = 200,
    seed: int = 0,
    kl: Mapping[str, Mapping[str, float]] | None = None,
) -> EvaluationResult:
    """Compare ``k >= 2`` models by their reward clouds (module docstring).

    Args:
        rewards: ``{model: (B, G, d)}``, same prompts in the same order for every model; the
            first model is the reference. NaN marks masked scores.
        attributes: ``d`` attribute names.
        specs: one :class:`DominanceSpec` per estimator reported (:func:`eval_specs`).
        eps0, alpha: absolute test threshold and level; ``alpha`` is also the relative test's
            family-wise level.
        level: coverage of the bootstrap percentile intervals (0.9: a 90% interval).
        n_boot, seed: bootstrap replicates and their seed.
        kl: ``{model: {"kl": ..., "kl_se": ...}}`` computed elsewhere (generation), copied in.
    """
    rewards = _check_rewards(rewards, attributes)
    specs = eval_specs(list(specs))
    names = list(rewards)
    B, G, _ = rewards[names[0]].shape
    dominance: dict[str, dict[str, Any]] = {}
    for spec in specs:
        norm = Normalizer.fit(spec.normalisation, rewards[names[0]].reshape(-1, len(attributes)), attributes)
        scaled = {n: norm(r).float() for n, r in rewards.items()}  # float32: the solvers' speed
        points, groups, masked, dropped = _clouds(scaled)
        options = dict(spec.options)
        if spec.estimator == "sliced":
            options.setdefault("seed", seed)  # the same directions for every pair and replicate
        boot = stats.bootstrap_eps(points, groups, n_boot=n_boot, level=level, boot_seed=seed,
                                   **spec.violation_kwargs(**options))
        absolute = stats.absolute_test(boot, eps0=eps0, alpha=alpha)  # t critical values with the bootstrap df
        relative = stats.relative_test(boot, alpha=alpha)
        problems = stats.spec_problems(spec)
        dominance[spec.estimator] = {
            "eps": boot.eps.tolist(), "se": boot.se.tolist(), "low": boot.low.tolist(), "high": boot.high.tolist(),
            "spec": spec.to_dict(),
            "tests_calibrated": not (problems["invalid"] or problems["uncalibrated"]),
            "test_problems": problems["invalid"] + problems["uncalibrated"],
            "absolute": {"eps0": eps0, "alpha": alpha, "upper": absolute.upper.tolist(),
                         "reject": absolute.reject.tolist(), "p_value": absolute.p_value.tolist()},
            "relative": {"eps": relative.eps.tolist(), "se": relative.se.tolist(),
                         "decision": relative.decision.tolist(), "wins": relative.wins.tolist(),
                         "ranking": [names[i] for i in relative.ranking.tolist()],
                         "z": relative.z, "correction": relative.correction, "reduction": relative.reduction},
        }
    return EvaluationResult(
        models=names, attributes=list(attributes), n_prompts=B, G=G,
        stats=attribute_stats(rewards, attributes, n_boot=n_boot, seed=seed),
        dominance=dominance, kl={k: dict(v) for k, v in (kl or {}).items()},
        settings={"dominance": [s.to_dict() for s in specs], "eps0": eps0, "alpha": alpha, "level": level,
                  "n_boot": n_boot, "seed": seed},
        masked=masked, dropped_prompts=dropped,
    )
