"""Statistics of the violation ratio between models: eps matrix, bootstrap, absolute and relative tests.

DESIGN.md §5. ``eps_ij = eps(model_i ≽ model_j) = D(P_i, P_j) / (D(P_i, P_j) + D(P_j, P_i))``
(:func:`multidom.violation_ratio`); small ``eps_ij`` means model ``i`` (almost) dominates ``j``.
The tests follow Nitsure et al., "Risk Assessment and Statistical Significance in the Age of
Foundation Models" (arXiv 2310.07132: absolute and relative tests, Bonferroni, Borda ranking) and
Rioux et al., "Multivariate Stochastic Dominance via Optimal Transport and Applications to Models
Benchmarking" (arXiv 2406.06425: the same tests for the multivariate entropic-OT ratio, with a
central limit theorem and bootstrap consistency for it).

Everything here is a pure function of reward tensors; nothing is logged or plotted::

    rewards = [r_base, r_new]                    # each (n_prompts, G, d), same prompts, same order
    check_test_spec(spec)                        # refuses specs whose tests have no error control
    boot = bootstrap_eps(rewards, n_boot=1000, boot_seed=0)  # default: quantile, logistic (TEST_DEFAULT)
    boot.eps[1, 0], boot.low[1, 0], boot.high[1, 0]      # eps(new ≽ base) and its 95% interval
    absolute_test(boot, eps0=0.3).reject[1, 0]            # new almost dominates base?
    relative_test(boot).ranking                           # models, best first

**Which specs can be tested** (:func:`check_test_spec`; DESIGN.md §8). The tests need ``eps`` to have a
limit law where the null hypotheses are tight, i.e. between equal models. With a cost whose
``h(0) = 0`` (``hinge``, ``squared_hinge``, ``least_squares`` without margin) the violation of a
model over itself is ``D(P, P) = 0``, so for equal models ``eps = D / (D + D')`` is ``0 / 0`` in the
limit: both violations are ``O(n^{-1/2})`` noise, ``eps_hat`` does not converge to ``1/2`` (sd 0.25-0.30
between two equal models of 40 prompts x 3) and the bootstrap does not see its spread (relative
test family-wise error 0.20-0.32 at nominal 0.05, absolute test size 0.12-0.17). Entropic
regularisation does not rescue it at usable ``reg``: ``D_lambda(P, P)`` is ``O(lambda)`` (sinkhorn, hinge,
``reg`` 0.1: 0.09 and 0.071). ``least_squares`` without margin is symmetric, so its ``eps`` is 1/2 for
any two models. With the ``logistic`` cost,
``D(P, P) = d log 2 > 0`` and, with its tie slope ``k = g``, ``eps = D / (2 D + g (E_P s - E_Q s))`` is
a smooth function of the clouds near ``P = Q`` (``eps - 1/2 ~ -g (E_P s - E_Q s) / (4 D)``), so the
delta method and the bootstrap apply -- the smooth cost of Rioux et al.'s central limit theorem.
The calibration experiment (``experiments/calibration.py``, results in
``experiments/results/calibration.md``) checks size, family-wise error, coverage and power by
simulation for every estimator x cost.

Departures from the papers (STYLE.md §8):

* Standard errors come from the bootstrap rather than from the asymptotic-variance formula with
  ``sigma / sqrt(n)``; the test statistic is the same. Two small-sample corrections, both standard
  for cluster-level inference with ``P`` clusters (Cameron & Miller 2015, "A Practitioner's Guide
  to Cluster-Robust Inference", §VI): the bootstrap ``std`` is multiplied by ``sqrt(P / (P - 1))``
  (the bootstrap variance of a mean is ``(P - 1) / P`` times the unbiased one) and critical values
  come from Student's ``t`` with ``P - 1`` degrees of freedom instead of the normal. Measured on
  equal models (40 prompts x 3, d = 2, k = 3, quantile/logistic, 1000 replications) the normal test
  with the plain bootstrap ``std`` had family-wise error 0.065 and size 0.057 at nominal 0.05 (0.082
  and 0.063 at 20 prompts); corrected, 0.050 and 0.050 (0.054, 0.051).
* Intervals are ``eps_hat -/+ t_{P-1} se`` (clipped to ``[0, 1]``) by default; the percentile
  interval under-covered (0.86 for nominal 0.90 at 40 prompts) and remains available
  (``interval="percentile"``).
* Resampling is by **prompt** (cluster bootstrap): all completions of a drawn prompt come along,
  and with ``joint=True`` the same prompt indices are used for every model, so the correlation
  between models scored on the same prompts is kept (Nitsure et al. resample i.i.d. samples).
* The one-versus-all ratio is the **mean** ``eps_i = 1/(k-1) sum_{j != i} eps_ij`` by default
  (so it stays in ``[0, 1]``, 1/2 for a model equal to all others); ``reduction="sum"`` gives the
  sum of DESIGN.md §5. Decisions and rankings are identical under both (a common scale).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from multidom.core.clouds import CloudLike
from multidom.core.costs import get_cost
from multidom.core.spec import DominanceSpec

__all__ = [
    "AbsoluteTest",
    "BootstrapResult",
    "INTERVALS",
    "MAX_CALIBRATED_GAIN",
    "RelativeTest",
    "TEST_DEFAULT",
    "UncalibratedTestWarning",
    "absolute_test",
    "bootstrap_eps",
    "borda",
    "check_test_spec",
    "eps_matrix",
    "one_versus_all",
    "relative_test",
    "spec_problems",
]


# --------------------------------------------------------------------------------------------
# which specs the tests are valid for
# --------------------------------------------------------------------------------------------

#: The spec evaluation should test with by default: the ``quantile`` estimator (every attribute's
#: exact 1-D violation, summed; no solver tolerance; milliseconds per bootstrap batch) with the
#: ``logistic`` cost of gain 1 on attributes z-scored against the baseline. Calibrated by
#: ``experiments/calibration.py``; the joint alternative is ``estimator="sinkhorn"`` (``reg`` 0.1) or
#: ``"exact"`` with the same cost.
TEST_DEFAULT = DominanceSpec(estimator="quantile", cost="logistic", cost_gain=1.0, margin=0.0, options={},
                             normalisation="zscore")

#: Largest logistic gain (in units of the z-scored attributes) the calibration covers. The linear
#: regime of ``eps`` around 1/2 needs ``g * se(E_P s - E_Q s)`` small against ``D(P, P) = d log 2``.
MAX_CALIBRATED_GAIN = 2.0


class UncalibratedTestWarning(UserWarning):
    """The dominance tests are run with a spec whose error level is not guaranteed (see :func:`check_test_spec`)."""


_KW_FIELDS = ("estimator", "cost", "cost_gain", "margin")


def _as_spec(spec: DominanceSpec | Mapping[str, Any] | None, violation_kwargs: Mapping[str, Any]) -> DominanceSpec:
    """A :class:`DominanceSpec` from a spec, a YAML mapping, or flat :func:`multidom.violation` keywords
    (``estimator``, ``cost``, ``cost_gain``, ``margin`` and the estimator's options); missing fields
    take :data:`TEST_DEFAULT`'s values."""
    if isinstance(spec, DominanceSpec):
        if violation_kwargs:
            raise ValueError("pass either a DominanceSpec or violation keywords, not both")
        return spec
    if spec is not None:
        return DominanceSpec.from_mapping(spec, **{f: getattr(TEST_DEFAULT, f) for f in _KW_FIELDS})
    kw = dict(violation_kwargs)
    kw.pop("part", None)
    fields = {f: kw.pop(f, getattr(TEST_DEFAULT, f)) for f in _KW_FIELDS}
    return DominanceSpec(**fields, options=kw, normalisation=TEST_DEFAULT.normalisation)


@dataclass(frozen=True)
class _Rule:
    """One row of :data:`_RULES`: ``applies(spec) -> bool`` and what it means for the tests."""

    verdict: str  # "invalid" (no error control) or "uncalibrated" (not covered by the calibration)
    applies: Callable[[DominanceSpec], bool]
    reason: str


def _h0(spec: DominanceSpec) -> float:
    cost = get_cost(spec.cost, gain=spec.cost_gain, margin=spec.margin)
    return float(cost.h(torch.zeros((), dtype=torch.float64)))


_RULES: tuple[_Rule, ...] = (
    _Rule("invalid", lambda s: _h0(s) == 0.0,
          "h(0) = 0 ({cost}, margin {margin:g}): D(P, P) = 0, so between equal models eps = D / (D + D') is 0/0 "
          "in the limit; its estimate jumps between ~0 and ~1 and the bootstrap misses that spread (measured "
          "family-wise error 0.20-0.32 at nominal 0.05; sinkhorn reg 0.1: 0.09, since D_reg(P, P) = O(reg))"),
    _Rule("uncalibrated", lambda s: s.cost == "logistic" and s.cost_gain > MAX_CALIBRATED_GAIN,
          "logistic cost_gain {cost_gain:g} > {max_gain:g}: the calibration covers gains up to {max_gain:g} on "
          "z-scored attributes (larger gains approach the hinge and its degeneracy)"),
    _Rule("uncalibrated", lambda s: s.margin > 0.0 and _h0(s) > 0.0,
          "margin {margin:g} > 0 with {cost}: D(P, P) = d h(0) > 0, so the ratio is not degenerate, but this "
          "combination is not calibrated by simulation"),
    _Rule("uncalibrated", lambda s: s.cost not in ("logistic", "hinge", "squared_hinge", "least_squares"),
          "cost {cost!r} is not covered by the calibration"),
    _Rule("uncalibrated", lambda s: s.estimator == "sinkhorn" and s.options.get("backend", "builtin") == "geomloss",
          "the geomloss backend's accuracy is set by its annealing alone (marginal errors ~1e-3): use builtin or pot"),
    _Rule("uncalibrated", lambda s: s.normalisation == "none",
          "normalisation 'none': cost_gain is then in raw reward units, outside the calibrated z-scored scale"),
)


def spec_problems(spec: DominanceSpec | Mapping[str, Any] | None = None,
                       **violation_kwargs: Any) -> dict[str, list[str]]:
    """Why the tests of this module would not hold their level with ``spec``: ``{"invalid": [...],
    "uncalibrated": [...]}`` (empty lists when the spec is fine). Arguments as in :func:`check_test_spec`."""
    spec = _as_spec(spec, violation_kwargs)
    fmt = dict(cost=spec.cost, margin=spec.margin, cost_gain=spec.cost_gain, max_gain=MAX_CALIBRATED_GAIN)
    out: dict[str, list[str]] = {"invalid": [], "uncalibrated": []}
    for rule in _RULES:
        if rule.applies(spec):
            out[rule.verdict].append(rule.reason.format(**fmt))
    return out


def check_test_spec(spec: DominanceSpec | Mapping[str, Any] | None = None, *, strict: bool = True,
                    **violation_kwargs: Any) -> DominanceSpec:
    """Validate a spec for the dominance tests (intervals, :func:`absolute_test`, :func:`relative_test`).

    **Valid default** (:data:`TEST_DEFAULT`): ``estimator="quantile"``, ``cost="logistic"``,
    ``cost_gain=1.0``, ``margin=0``, ``normalisation="zscore"`` (fitted on the baseline). Joint
    dominance: the same cost with ``estimator="sinkhorn"`` (``reg=0.1``; evaluation's
    ``tol=1e-3, max_iter=500`` are fine) or ``"exact"``; ``"sliced"`` too. Each was calibrated by
    ``experiments/calibration.py`` (``experiments/results/calibration.md``: equal-model family-wise
    error and size <= 0.07 at alpha = 0.05, 90 % intervals covering 0.87-0.93; 3 models x 20-80
    prompts x 3 completions for quantile, 20-40 for sliced and sinkhorn, 20 for exact).

    **Invalid** (``ValueError`` when ``strict``, else an :class:`UncalibratedTestWarning`): costs with
    ``h(0) = 0`` -- ``hinge``, ``squared_hinge``, ``least_squares`` with ``margin=0`` -- for every
    estimator, Sinkhorn included (module docstring: ``eps`` has no limit law between equal models).
    Use them for point estimates of ``eps`` (``eps = 0`` iff dominance for the unregularised hinge),
    not for tests or intervals.

    **Uncalibrated** (always an :class:`UncalibratedTestWarning`, never an error): a logistic gain above
    :data:`MAX_CALIBRATED_GAIN`, a positive margin, the geomloss backend, ``normalisation="none"``.

    Args:
        spec: a :class:`~multidom.core.spec.DominanceSpec`, its YAML mapping, or ``None`` with the flat
            :func:`multidom.violation` keywords in ``violation_kwargs`` (``estimator``, ``cost``,
            ``cost_gain``, ``margin``, options). Missing fields take :data:`TEST_DEFAULT`'s values.
        strict: raise on an invalid spec (default) instead of warning.
    Returns:
        The spec as a :class:`~multidom.core.spec.DominanceSpec`.
    Raises:
        ValueError: an invalid spec with ``strict=True`` (the reasons and the valid default in the message),
            or a spec that is not a valid :class:`DominanceSpec` at all.
    """
    return _check(_as_spec(spec, violation_kwargs), strict, stacklevel=3)


def _check(spec: DominanceSpec, strict: bool, stacklevel: int) -> DominanceSpec:
    """:func:`check_test_spec` on a built spec; warnings point ``stacklevel`` frames up."""
    problems = spec_problems(spec)
    default = (f"valid default: estimator={TEST_DEFAULT.estimator!r}, cost={TEST_DEFAULT.cost!r}, "
               f"cost_gain={TEST_DEFAULT.cost_gain:g}, normalisation={TEST_DEFAULT.normalisation!r}")
    if problems["invalid"]:
        msg = (f"dominance tests are not valid with estimator={spec.estimator!r}, cost={spec.cost!r}: "
               + "; ".join(problems["invalid"]) + f" ({default})")
        if strict:
            raise ValueError(msg)
        warnings.warn(msg, UncalibratedTestWarning, stacklevel=stacklevel)
    for reason in problems["uncalibrated"]:
        warnings.warn(f"dominance tests with estimator={spec.estimator!r}, cost={spec.cost!r}: {reason}",
                      UncalibratedTestWarning, stacklevel=stacklevel)
    return spec


# --------------------------------------------------------------------------------------------
# critical values
# --------------------------------------------------------------------------------------------


def _quantile(p: float, df: int | None) -> float:
    """``p``-quantile of Student's ``t`` with ``df`` degrees of freedom (normal for ``df=None``)."""
    if df is None:
        return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))
    from scipy.stats import t

    return float(t.ppf(p, df))


def _cdf(x: torch.Tensor, df: int | None) -> torch.Tensor:
    """Student's ``t`` (or normal) CDF, elementwise; ``+-inf`` map to 1 / 0."""
    if df is None:
        return torch.special.ndtr(x)
    from scipy.stats import t

    return torch.as_tensor(t.cdf(x.detach().cpu().numpy(), df), dtype=x.dtype, device=x.device)


def _se_factor(df: int | None) -> float:
    """``sqrt(P / (P - 1))`` with ``P = df + 1`` prompts (1 when unknown)."""
    return 1.0 if df is None else math.sqrt((df + 1) / df)


def _violation_ratio(positive: CloudLike, negative: CloudLike, **kwargs: Any) -> torch.Tensor:
    import multidom  # late import: the package's __init__ may import this module

    return multidom.violation_ratio(positive, negative, **kwargs)


def _check_open_unit(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


# --------------------------------------------------------------------------------------------
# eps matrix
# --------------------------------------------------------------------------------------------


def eps_matrix(clouds: Sequence[CloudLike], **violation_kwargs: Any) -> torch.Tensor:
    """Matrix of violation ratios ``eps_ij = eps(model_i ≽ model_j)`` between ``k`` clouds.

    ``eps_ij = D(P_i, P_j) / (D(P_i, P_j) + D(P_j, P_i))`` (DESIGN.md §1), computed with
    :func:`multidom.violation_ratio` once per unordered pair ``i < j``; ``eps_ji = 1 - eps_ij``
    and the diagonal is ``1/2`` (``eps(P, P) = 1/2``). Row ``i`` small = model ``i`` dominates.

    Args:
        clouds: ``k >= 2`` clouds, each points ``(..., n_i, d)`` or ``(points, weights (..., n_i))``;
            sizes ``n_i`` may differ, ``d`` and the batch shape ``(...)`` must agree. A batch
            (e.g. bootstrap replicates) is solved in one call per pair.
        **violation_kwargs: passed to :func:`multidom.violation_ratio` (``estimator``, ``cost``,
            ``beta``, ``margin``, ``reg``, ``seed``, ...). With ``estimator="sliced"`` pass a
            ``seed`` so that every pair uses the same directions.
    Returns:
        ``(..., k, k)`` tensor; ``eps[..., i, j] + eps[..., j, i] = 1``.
    Raises:
        ValueError: fewer than two clouds (and whatever the estimator raises for bad clouds).
    """
    k = len(clouds)
    if k < 2:
        raise ValueError(f"eps_matrix needs at least 2 clouds (models), got {k}")
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    values = [_violation_ratio(clouds[i], clouds[j], **violation_kwargs) for i, j in pairs]
    first = values[0]
    out = torch.full((*first.shape, k, k), 0.5, dtype=first.dtype, device=first.device)
    for (i, j), value in zip(pairs, values):
        out[..., i, j] = value
        out[..., j, i] = 1.0 - value
    return out


# --------------------------------------------------------------------------------------------
# bootstrap over prompts
# --------------------------------------------------------------------------------------------


INTERVALS: tuple[str, ...] = ("t", "percentile")


@dataclass
class BootstrapResult:
    """Bootstrap of the eps matrix over prompts; every matrix is ``(k, k)`` as in :func:`eps_matrix`.

    Attributes:
        eps: ``(k, k)`` point estimate on the full data.
        se: ``(k, k)`` bootstrap standard error: ``sqrt(P / (P - 1))`` times the ``std`` of the
            replicates (``ddof = 1``) with ``P = df + 1`` prompts (module docstring); the plain ``std``
            when ``df`` is ``None``.
        low, high: ``(k, k)`` interval at ``level``: ``eps -/+ t_{df, (1 + level)/2} se`` clipped to
            ``[0, 1]`` (``interval="t"``), or the percentile interval (quantiles ``(1 -/+ level) / 2``).
        level: coverage of the interval.
        replicates: ``(n_boot, k, k)`` the bootstrap eps matrices (input of :func:`relative_test`).
        joint: whether prompts were resampled jointly across models.
        df: degrees of freedom of the tests, ``P - 1`` (the smallest prompt count when ``joint=False``);
            ``None``: normal critical values and no small-sample factor (results built by hand).
        interval: ``"t"`` or ``"percentile"``.
        options: the :func:`multidom.violation_ratio` keywords used (defaults filled in).
    """

    eps: torch.Tensor
    se: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    level: float
    replicates: torch.Tensor
    joint: bool
    df: int | None = None
    interval: str = "percentile"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Grouped:
    """One model's rewards padded per prompt: points ``(P, G, d)``, mask ``(P, G)`` or None, ids ``(P,)``."""

    points: torch.Tensor
    mask: torch.Tensor | None
    prompt_ids: torch.Tensor


def _group(rewards: torch.Tensor, groups: torch.Tensor | None, model: int) -> _Grouped:
    """Bring ``(P, G, d)`` or flat ``(n, d)`` (+ ``groups (n,)``) to the padded per-prompt form."""
    rewards = torch.as_tensor(rewards)
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    if rewards.dim() == 3:
        if groups is not None:
            raise ValueError(
                f"model {model}: rewards of shape (n_prompts, G, d) are already grouped by prompt; "
                "pass groups only with flat (n, d) rewards"
            )
        if 0 in rewards.shape:
            raise ValueError(f"model {model}: empty rewards of shape {tuple(rewards.shape)}")
        return _Grouped(rewards, None, torch.arange(rewards.shape[0], device=rewards.device))
    if rewards.dim() != 2:
        raise ValueError(
            f"model {model}: rewards must have shape (n_prompts, G, d) or (n, d), got {tuple(rewards.shape)}"
        )
    n = rewards.shape[0]
    if n == 0 or rewards.shape[1] == 0:
        raise ValueError(f"model {model}: empty rewards of shape {tuple(rewards.shape)}")
    if groups is None:  # every row is its own prompt
        return _Grouped(rewards[:, None, :], None, torch.arange(n, device=rewards.device))
    groups = torch.as_tensor(groups, device=rewards.device)
    if groups.dim() != 1 or groups.shape[0] != n:
        raise ValueError(f"model {model}: groups must have shape ({n},), got {tuple(groups.shape)}")
    if groups.is_floating_point() or groups.is_complex():
        raise ValueError(f"model {model}: groups must be integer prompt ids, got dtype {groups.dtype}")
    ids, inverse, counts = torch.unique(groups, sorted=True, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n, device=rewards.device) - starts[inverse[order]]
    size = int(counts.max())
    points = rewards.new_zeros(ids.shape[0], size, rewards.shape[1])
    mask = rewards.new_zeros(ids.shape[0], size)
    points[inverse[order], slot] = rewards[order]
    mask[inverse[order], slot] = 1.0
    return _Grouped(points, None if bool((counts == size).all()) else mask, ids)


def _split_groups(groups: Any, k: int) -> list[Any]:
    if groups is None or isinstance(groups, torch.Tensor):
        return [groups] * k
    groups = list(groups)
    if len(groups) != k:
        raise ValueError(f"groups: got {len(groups)} id vectors for {k} models")
    return groups


def _check_joint(models: list[_Grouped]) -> None:
    """Joint resampling needs every model scored on the same prompts."""
    counts = [m.points.shape[0] for m in models]
    if len(set(counts)) != 1:
        raise ValueError(
            f"prompt counts differ between models {counts}; joint resampling needs the same prompts "
            "for every model (pass joint=False for models scored on different prompts)"
        )
    ids = [m.prompt_ids for m in models]
    if any(not torch.equal(ids[0], i.to(ids[0])) for i in ids[1:]):
        raise ValueError(
            "models are scored on different prompt ids; joint resampling needs the same prompts "
            "for every model (pass joint=False otherwise)"
        )


def _resampled_cloud(model: _Grouped, index: torch.Tensor) -> CloudLike:
    """Cloud of the prompts ``index (b, P)``: points ``(b, P * G, d)`` (+ weights when padded)."""
    b = index.shape[0]
    points = model.points[index].reshape(b, -1, model.points.shape[-1])
    if model.mask is None:
        return points
    return points, model.mask[index].reshape(b, -1)


def _full_cloud(model: _Grouped) -> CloudLike:
    points = model.points.reshape(-1, model.points.shape[-1])
    if model.mask is None:
        return points
    return points, model.mask.reshape(-1)


def bootstrap_eps(
    rewards: Sequence[torch.Tensor],
    groups: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    boot_seed: int | None = None,
    joint: bool = True,
    batch_size: int = 100,
    interval: str = "t",
    **violation_kwargs: Any,
) -> BootstrapResult:
    """Bootstrap the eps matrix of ``k`` models by resampling prompts (cluster bootstrap).

    Replicate ``b`` draws ``P`` prompt indices with replacement, ``I_b ∈ {0..P-1}^P``, and keeps
    all completions of the drawn prompts; with ``joint=True`` the **same** ``I_b`` is used for
    every model (they were scored on the same prompts), with ``joint=False`` each model draws
    its own. Replicates are solved as one batch per pair (leading dim ``b <= batch_size``).
    Rioux et al. (arXiv 2406.06425) prove the bootstrap consistent for the entropic ratio with a
    smooth cost; the spec is checked by :func:`check_test_spec` (``strict=False``: an
    :class:`UncalibratedTestWarning` for specs whose intervals and tests have no error control).
    The defaults (no ``estimator``/``cost`` given) are :data:`TEST_DEFAULT`'s: ``quantile``,
    ``logistic``, gain 1. With ``estimator="sliced"`` and no ``seed`` one seed is drawn from
    ``boot_seed``'s generator, so every pair and replicate uses the same directions.

    Args:
        rewards: ``k >= 2`` reward arrays, one per model, either ``(n_prompts, G_i, d)``
            (``G_i`` completions per prompt) or flat ``(n_i, d)``. Flat arrays are grouped by
            ``groups``; without ``groups`` each row is its own prompt. Prompts of ungrouped
            inputs have ids ``0..P-1`` (row / first index ``r`` = prompt ``r``), so they can be
            mixed with flat inputs whose ``groups`` are ``0..P-1``.
        groups: prompt ids for flat rewards: one ``(n,)`` integer vector shared by all models or
            one per model. Groups may have different sizes (padding carries weight 0, so each
            replicate cloud is uniform over the completions it drew). In joint mode every model
            needs the same set of ids.
        n_boot: number of replicates (``>= 2``).
        level: coverage of the percentile interval, in ``(0, 1)``.
        boot_seed: seeds the private ``torch.Generator`` that draws the prompt indices
            (``None``: fresh randomness). Named apart from the sliced estimator's ``seed``, which
            goes through ``violation_kwargs`` (pass it, so every pair and replicate uses the same
            directions).
        joint: resample prompts jointly across models (default) or independently.
        batch_size: replicates per estimator call (bounds memory: the Sinkhorn estimator holds
            ``batch_size x n x m`` cost matrices).
        interval: ``"t"`` (default; ``eps -/+ t_{P-1} se``, clipped to ``[0, 1]``) or ``"percentile"``.
        **violation_kwargs: forwarded to :func:`multidom.violation_ratio` (missing ``estimator``,
            ``cost``, ``cost_gain``, ``margin`` from :data:`TEST_DEFAULT`).
    Returns:
        :class:`BootstrapResult` (``df = P - 1``).
    Raises:
        ValueError: ``k < 2``, fewer than 2 prompts, ``level`` not in ``(0, 1)``, ``n_boot < 2``,
            unknown ``interval``, bad shapes, mismatched attribute counts, or (joint) mismatched
            prompt counts / ids.
    """
    k = len(rewards)
    if k < 2:
        raise ValueError(f"bootstrap_eps needs at least 2 models, got {k}")
    level = _check_open_unit(level, "level")
    if int(n_boot) < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; valid: {', '.join(INTERVALS)}")
    n_boot, batch_size = int(n_boot), int(batch_size)
    for name in _KW_FIELDS:
        violation_kwargs.setdefault(name, getattr(TEST_DEFAULT, name))
    _check(_as_spec(None, violation_kwargs), strict=False, stacklevel=3)  # warnings point at the caller
    models = [_group(r, g, i) for i, (r, g) in enumerate(zip(rewards, _split_groups(groups, k)))]
    dims = [m.points.shape[-1] for m in models]
    if len(set(dims)) != 1:
        raise ValueError(f"attribute counts differ between models: d = {dims}")
    if joint:
        _check_joint(models)

    generator = torch.Generator()
    if boot_seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(boot_seed))
    n_prompts = [m.points.shape[0] for m in models]
    if min(n_prompts) < 2:
        raise ValueError(f"the bootstrap over prompts needs at least 2 prompts per model, got {n_prompts}")
    if joint:
        shared = torch.randint(n_prompts[0], (n_boot, n_prompts[0]), generator=generator)
        indices = [shared] * k
    else:
        indices = [torch.randint(p, (n_boot, p), generator=generator) for p in n_prompts]
    if violation_kwargs["estimator"] == "sliced" and violation_kwargs.get("seed") is None:
        # drawn after the indices, so that passing this seed back reproduces the same replicates
        violation_kwargs["seed"] = int(torch.randint(0, 2**31 - 1, (), generator=generator))

    with torch.no_grad():
        eps = eps_matrix([_full_cloud(m) for m in models], **violation_kwargs)
        chunks = []
        for start in range(0, n_boot, batch_size):
            clouds = [
                _resampled_cloud(m, idx[start : start + batch_size].to(m.points.device))
                for m, idx in zip(models, indices)
            ]
            chunks.append(eps_matrix(clouds, **violation_kwargs))
        replicates = torch.cat(chunks, 0)
    df = min(n_prompts) - 1
    se = _se_factor(df) * replicates.std(0)
    if interval == "t":
        half = _quantile((1.0 + level) / 2, df) * se
        low, high = (eps - half).clamp(0.0, 1.0), (eps + half).clamp(0.0, 1.0)
    else:
        quantiles = torch.tensor([(1.0 - level) / 2, (1.0 + level) / 2], dtype=replicates.dtype,
                                 device=replicates.device)
        low, high = torch.quantile(replicates, quantiles, dim=0)
    return BootstrapResult(eps, se, low, high, level, replicates, joint, df, interval, dict(violation_kwargs))


# --------------------------------------------------------------------------------------------
# absolute test
# --------------------------------------------------------------------------------------------


@dataclass
class AbsoluteTest:
    """Absolute test of ``H0: eps >= eps0`` against ``H1: eps < eps0`` ("almost dominates").

    All tensors broadcast from the inputs (e.g. ``(k, k)`` when given a whole eps matrix).

    Attributes:
        eps, se: the estimate and its standard error.
        threshold: ``eps0``.
        alpha: level of the test.
        z: critical value ``t_{df, 1-alpha}`` (``z_{1-alpha}`` when ``df`` is ``None``).
        upper: one-sided upper confidence bound ``eps + z se``.
        statistic: ``(eps - eps0) / se`` (``-inf``/``+inf`` when ``se = 0``).
        p_value: ``F(statistic)``, the one-sided p-value (``F`` the ``t_df`` or normal CDF);
            ``reject == (p_value < alpha)``.
        reject: ``upper < eps0``: H0 rejected, the first model almost dominates the second.
        df: degrees of freedom (``None``: normal).
    """

    eps: torch.Tensor
    se: torch.Tensor
    threshold: float
    alpha: float
    z: float
    upper: torch.Tensor
    statistic: torch.Tensor
    p_value: torch.Tensor
    reject: torch.Tensor
    df: int | None = None


def _statistic(gap: torch.Tensor, se: torch.Tensor) -> torch.Tensor:
    """``gap / se``, with ``-inf`` (``gap < 0``) or ``+inf`` (``gap >= 0``) where ``se = 0``."""
    degenerate = torch.where(gap < 0, float("-inf"), float("inf")).to(gap.dtype)
    return torch.where(se > 0, gap / torch.where(se > 0, se, 1.0), degenerate)


def absolute_test(
    eps: BootstrapResult | torch.Tensor | float, se: torch.Tensor | float | None = None, *, eps0: float,
    alpha: float = 0.05, df: int | None = None,
) -> AbsoluteTest:
    """Reject ``H0: eps >= eps0`` when ``eps + t_{df, 1-alpha} se < eps0`` (DESIGN.md §5).

    Nitsure et al. (arXiv 2310.07132, absolute testing), with the bootstrap standard error in
    place of ``sigma / sqrt(n)`` and Student's ``t`` with ``P - 1`` degrees of freedom in place of
    the normal (module docstring). A rejection says: with confidence ``1 - alpha`` the model
    violates dominance over the other by less than the fraction ``eps0``. Pass the
    :class:`BootstrapResult` itself (``absolute_test(boot, eps0=0.3)``) to get its ``eps``, ``se`` and
    ``df``; with tensors, ``df=None`` gives the normal test of the first version.

    Args:
        eps: a :class:`BootstrapResult`, or estimate(s) of ``eps(model ≽ other)``, any shape.
        se: standard error(s), ``>= 0``, broadcastable with ``eps``; ``None`` with a ``BootstrapResult``.
        eps0: threshold in ``(0, 1)`` (0.5 means "better than"; see the README for its meaning
            under the logistic cost).
        alpha: level in ``(0, 1)``.
        df: degrees of freedom of the ``t`` critical value (``None``: normal); taken from a
            ``BootstrapResult`` when not given.
    Returns:
        :class:`AbsoluteTest`.
    Raises:
        ValueError: ``alpha`` or ``eps0`` not in ``(0, 1)``; non-finite ``eps``/``se``; ``se < 0``;
            ``se`` missing (or given with a ``BootstrapResult``); ``df < 1``.
    """
    if isinstance(eps, BootstrapResult):
        if se is not None:
            raise ValueError("absolute_test(boot, ...) takes se from the BootstrapResult; do not pass se")
        df = eps.df if df is None else df
        eps, se = eps.eps, eps.se
    if se is None:
        raise ValueError("absolute_test needs se (or a BootstrapResult)")
    if df is not None and int(df) < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    alpha = _check_open_unit(alpha, "alpha")
    eps0 = _check_open_unit(eps0, "eps0")
    eps, se = torch.as_tensor(eps), torch.as_tensor(se)
    dtype = torch.promote_types(torch.promote_types(eps.dtype, se.dtype), torch.get_default_dtype())
    eps, se = eps.to(dtype), se.to(dtype)
    if not (torch.isfinite(eps).all() and torch.isfinite(se).all()):
        raise ValueError("eps and se must be finite")
    if (se < 0).any():
        raise ValueError("se must be >= 0")
    z = _quantile(1.0 - alpha, df)
    upper = eps + z * se
    statistic = _statistic(eps - eps0, se)
    return AbsoluteTest(
        eps=eps, se=se, threshold=eps0, alpha=alpha, z=z, upper=upper,
        statistic=statistic, p_value=_cdf(statistic, df), reject=upper < eps0, df=df,
    )


# --------------------------------------------------------------------------------------------
# relative test between k models
# --------------------------------------------------------------------------------------------

_REDUCTIONS: dict[str, Callable[[int], float]] = {
    "mean": lambda k: 1.0 / (k - 1),
    "sum": lambda k: 1.0,
}
# per-test level from the family level alpha and the number m of one-sided tests
_CORRECTIONS: dict[str, Callable[[float, int], float]] = {
    "bonferroni": lambda alpha, m: alpha / m,
    "none": lambda alpha, m: alpha,
}


def one_versus_all(eps: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """One-versus-all ratio ``eps_i = c_k sum_{j != i} eps_ij`` of an eps matrix.

    Args:
        eps: ``(..., k, k)`` (e.g. :func:`eps_matrix` or ``BootstrapResult.replicates``).
        reduction: ``"mean"`` (``c_k = 1/(k-1)``, default) or ``"sum"`` (``c_k = 1``).
    Returns:
        ``(..., k)``; smaller is better.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(_REDUCTIONS)}")
    k = eps.shape[-1]
    if eps.dim() < 2 or eps.shape[-2] != k or k < 2:
        raise ValueError(f"eps must be a (..., k, k) matrix with k >= 2, got {tuple(eps.shape)}")
    off = 1.0 - torch.eye(k, dtype=eps.dtype, device=eps.device)
    return (eps * off).sum(-1) * _REDUCTIONS[reduction](k)


def borda(rankings: torch.Tensor) -> torch.Tensor:
    """Borda count of ``r`` rankings of ``k`` models: ``score_i = sum_rankings (k - 1 - position_i)``.

    Args:
        rankings: ``(r, k)`` (or ``(k,)``) model indices, best first, each row a permutation.
    Returns:
        ``(k,)`` integer scores; higher is better. Used to aggregate rankings across estimators,
        attributes or tasks (as Nitsure et al. arXiv 2310.07132 and Rioux et al. arXiv 2406.06425
        aggregate per-metric rankings).
    """
    rankings = torch.as_tensor(rankings)
    rankings = rankings[None] if rankings.dim() == 1 else rankings
    r, k = rankings.shape
    if not torch.equal(rankings.sort(-1).values, torch.arange(k).expand(r, k).to(rankings)):
        raise ValueError("each ranking must be a permutation of 0..k-1")
    points = (k - 1 - torch.arange(k)).expand(r, k)
    return torch.zeros(k, dtype=torch.long).scatter_add_(0, rankings.reshape(-1).long().cpu(),
                                                        points.reshape(-1))


@dataclass
class RelativeTest:
    """Relative test between ``k`` models (one-versus-all ratio, pairwise differences, Borda ranking).

    Attributes:
        eps: ``(k,)`` one-versus-all ratios (point estimate); smaller is better.
        se: ``(k,)`` their bootstrap standard errors (with the small-sample factor of ``boot.se``).
        diff: ``(k, k)`` ``eps_i - eps_j``.
        diff_se: ``(k, k)`` bootstrap standard error of ``eps_i - eps_j`` (paired over replicates,
            with the same factor).
        p_value: ``(k, k)`` one-sided p-value of ``H0: eps_i >= eps_j``, ``F(diff / diff_se)`` with
            ``F`` the ``t_df`` (or normal) CDF, **uncorrected** (multiply by ``n_tests`` for Bonferroni).
        decision: ``(k, k)`` bool, ``decision[i, j]``: ``H0: eps_i >= eps_j`` rejected, i.e. model
            ``i`` declared better than ``j`` (``diff + z diff_se < 0``); never true on the diagonal.
        wins: ``(k,)`` Borda score: the number of models each one is declared better than.
        ranking: ``(k,)`` model indices best first: by ``wins`` descending, ties by ``eps``.
        z: the critical value used, ``t_{df, 1 - alpha / n_tests}`` under Bonferroni.
        alpha: family-wise level.
        n_tests: number of one-sided tests in the family, ``k (k - 1)``.
        correction: ``"bonferroni"`` or ``"none"``.
        reduction: ``"mean"`` or ``"sum"``.
        df: degrees of freedom (``boot.df``; ``None``: normal).
    """

    eps: torch.Tensor
    se: torch.Tensor
    diff: torch.Tensor
    diff_se: torch.Tensor
    p_value: torch.Tensor
    decision: torch.Tensor
    wins: torch.Tensor
    ranking: torch.Tensor
    z: float
    alpha: float
    n_tests: int
    correction: str
    reduction: str
    df: int | None = None


def relative_test(
    boot: BootstrapResult,
    *,
    alpha: float = 0.05,
    correction: str = "bonferroni",
    reduction: str = "mean",
    atol: float | None = None,
) -> RelativeTest:
    """Which of ``k`` models dominates the others, with family-wise error control.

    Nitsure et al. (arXiv 2310.07132, relative testing), Rioux et al. (arXiv 2406.06425): the
    one-versus-all ratio ``eps_i = 1/(k-1) sum_{j != i} eps_ij`` (see
    :func:`one_versus_all`), for every ordered pair the one-sided test of ``H0: eps_i >= eps_j``
    rejected when ``eps_i - eps_j + z se(eps_i - eps_j) < 0`` with ``z = t_{P-1, 1 - alpha / (k(k-1))}``
    (Bonferroni over the ``k(k-1)`` ordered pairs; Student's ``t`` with ``boot.df = P - 1``, the normal
    when ``boot.df`` is ``None``), and the Borda ranking of the resulting tournament (a model scores
    one point for each model it is declared better than). ``se(eps_i - eps_j)`` is ``sqrt(P / (P - 1))``
    times the standard deviation over bootstrap replicates of the difference, so the correlation
    between ``eps_i`` and ``eps_j`` is accounted for. The family-wise error is controlled only for
    specs :func:`check_test_spec` accepts (measured in ``experiments/results/calibration.md``).

    Args:
        boot: :func:`bootstrap_eps` result (its ``eps`` and ``replicates`` are used).
        alpha: family-wise level in ``(0, 1)``.
        correction: ``"bonferroni"`` (default) or ``"none"`` (per-test level ``alpha``).
        reduction: ``"mean"`` (default) or ``"sum"`` for the one-versus-all ratio.
        atol: differences and standard errors up to ``atol`` are set to 0 (ties). ``eps_ji`` is
            stored as ``1 - eps_ij``, so two models with identical rewards differ by rounding
            (~1e-16), and without this a zero standard error would turn that noise into a
            decision. Default ``64 * finfo(dtype).eps``.
    Returns:
        :class:`RelativeTest`.
    Raises:
        ValueError: ``alpha`` not in ``(0, 1)``, unknown correction/reduction, ``k < 2``.
    """
    alpha = _check_open_unit(alpha, "alpha")
    if correction not in _CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; valid: {', '.join(_CORRECTIONS)}")
    eps = one_versus_all(boot.eps, reduction)
    reps = one_versus_all(boot.replicates, reduction)  # (n_boot, k)
    k = eps.shape[-1]
    n_tests = k * (k - 1)
    df = boot.df
    z = _quantile(1.0 - _CORRECTIONS[correction](alpha, n_tests), df)
    factor = _se_factor(df)
    if atol is None:
        atol = 64 * torch.finfo(eps.dtype).eps
    snap = lambda t: torch.where(t.abs() <= atol, torch.zeros_like(t), t)  # noqa: E731
    diff = snap(eps[:, None] - eps[None, :])
    diff_se = snap(factor * (reps[:, :, None] - reps[:, None, :]).std(0))
    decision = diff + z * diff_se < 0
    decision.fill_diagonal_(False)
    wins = decision.sum(-1)
    order = sorted(range(k), key=lambda i: (-int(wins[i]), float(eps[i]), i))
    return RelativeTest(
        eps=eps, se=factor * reps.std(0), diff=diff, diff_se=diff_se,
        p_value=_cdf(_statistic(diff, diff_se), df), decision=decision, wins=wins,
        ranking=torch.tensor(order), z=z, alpha=alpha, n_tests=n_tests, correction=correction,
        reduction=reduction, df=df,
    )
