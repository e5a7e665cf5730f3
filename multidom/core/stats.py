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
    boot = bootstrap_eps(rewards, n_boot=1000, boot_seed=0, estimator="quantile")
    boot.eps[1, 0], boot.low[1, 0], boot.high[1, 0]      # eps(new ≽ base) and its 95% interval
    absolute_test(boot.eps, boot.se, eps0=0.3).reject[1, 0]  # new almost dominates base?
    relative_test(boot).ranking                           # models, best first

Departures from the papers (STYLE.md §8):

* Standard errors come from the bootstrap (``std`` of the replicates) rather than from the
  asymptotic-variance formula with ``sigma / sqrt(n)``; the test statistic is the same.
* Resampling is by **prompt** (cluster bootstrap): all completions of a drawn prompt come along,
  and with ``joint=True`` the same prompt indices are used for every model, so the correlation
  between models scored on the same prompts is kept (Nitsure et al. resample i.i.d. samples).
* The one-versus-all ratio is the **mean** ``eps_i = 1/(k-1) sum_{j != i} eps_ij`` by default
  (so it stays in ``[0, 1]``, 1/2 for a model equal to all others); ``reduction="sum"`` gives the
  sum of DESIGN.md §5. Decisions and rankings are identical under both (a common scale).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from multidom.core.clouds import CloudLike

__all__ = [
    "AbsoluteTest",
    "BootstrapResult",
    "RelativeTest",
    "absolute_test",
    "bootstrap_eps",
    "borda",
    "eps_matrix",
    "one_versus_all",
    "relative_test",
]


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


@dataclass
class BootstrapResult:
    """Bootstrap of the eps matrix over prompts; every matrix is ``(k, k)`` as in :func:`eps_matrix`.

    Attributes:
        eps: ``(k, k)`` point estimate on the full data.
        se: ``(k, k)`` bootstrap standard error (``std`` of the replicates, ``ddof = 1``).
        low, high: ``(k, k)`` percentile interval at ``level`` (quantiles ``(1 -/+ level) / 2``).
        level: coverage of the interval.
        replicates: ``(n_boot, k, k)`` the bootstrap eps matrices (input of :func:`relative_test`).
        joint: whether prompts were resampled jointly across models.
    """

    eps: torch.Tensor
    se: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    level: float
    replicates: torch.Tensor
    joint: bool


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
    **violation_kwargs: Any,
) -> BootstrapResult:
    """Bootstrap the eps matrix of ``k`` models by resampling prompts (cluster bootstrap).

    Replicate ``b`` draws ``P`` prompt indices with replacement, ``I_b ∈ {0..P-1}^P``, and keeps
    all completions of the drawn prompts; with ``joint=True`` the **same** ``I_b`` is used for
    every model (they were scored on the same prompts), with ``joint=False`` each model draws
    its own. Replicates are solved as one batch per pair (leading dim ``b <= batch_size``).
    Rioux et al. (arXiv 2406.06425) prove the bootstrap consistent for the entropic ratio.

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
        **violation_kwargs: forwarded to :func:`multidom.violation_ratio`.
    Returns:
        :class:`BootstrapResult`.
    Raises:
        ValueError: ``k < 2``, ``level`` not in ``(0, 1)``, ``n_boot < 2``, bad shapes, mismatched
            attribute counts, or (joint) mismatched prompt counts / ids.
    """
    k = len(rewards)
    if k < 2:
        raise ValueError(f"bootstrap_eps needs at least 2 models, got {k}")
    level = _check_open_unit(level, "level")
    if int(n_boot) < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_boot, batch_size = int(n_boot), int(batch_size)
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
    if joint:
        shared = torch.randint(n_prompts[0], (n_boot, n_prompts[0]), generator=generator)
        indices = [shared] * k
    else:
        indices = [torch.randint(p, (n_boot, p), generator=generator) for p in n_prompts]

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
    quantiles = torch.tensor([(1.0 - level) / 2, (1.0 + level) / 2], dtype=replicates.dtype,
                             device=replicates.device)
    low, high = torch.quantile(replicates, quantiles, dim=0)
    return BootstrapResult(eps, replicates.std(0), low, high, level, replicates, joint)


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
        z: critical value ``z_{1-alpha}``.
        upper: one-sided upper confidence bound ``eps + z se``.
        statistic: ``(eps - eps0) / se`` (``-inf``/``+inf`` when ``se = 0``).
        p_value: ``Phi(statistic)``, the one-sided normal p-value; ``reject == (p_value < alpha)``.
        reject: ``upper < eps0``: H0 rejected, the first model almost dominates the second.
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


def _z(alpha: float) -> float:
    """``z_{1-alpha}``, the standard normal ``(1 - alpha)`` quantile."""
    return float(torch.special.ndtri(torch.tensor(1.0 - alpha, dtype=torch.float64)))


def _statistic(gap: torch.Tensor, se: torch.Tensor) -> torch.Tensor:
    """``gap / se``, with ``-inf`` (``gap < 0``) or ``+inf`` (``gap >= 0``) where ``se = 0``."""
    degenerate = torch.where(gap < 0, float("-inf"), float("inf")).to(gap.dtype)
    return torch.where(se > 0, gap / torch.where(se > 0, se, 1.0), degenerate)


def absolute_test(
    eps: torch.Tensor | float, se: torch.Tensor | float, *, eps0: float, alpha: float = 0.05
) -> AbsoluteTest:
    """Reject ``H0: eps >= eps0`` when ``eps + z_{1-alpha} se < eps0`` (DESIGN.md §5).

    Nitsure et al. (arXiv 2310.07132, absolute testing), with the bootstrap standard error in
    place of ``sigma / sqrt(n)``. A rejection says: with confidence ``1 - alpha`` the model
    violates dominance over the other by less than the fraction ``eps0``.

    Args:
        eps: estimate(s) of ``eps(model ≽ other)``, any shape (e.g. ``BootstrapResult.eps``).
        se: standard error(s), ``>= 0``, broadcastable with ``eps`` (e.g. ``BootstrapResult.se``).
        eps0: threshold in ``(0, 1)`` (Nitsure et al. use 0.25-0.4; 0.5 means "better than").
        alpha: level in ``(0, 1)``.
    Returns:
        :class:`AbsoluteTest`.
    Raises:
        ValueError: ``alpha`` or ``eps0`` not in ``(0, 1)``; non-finite ``eps``/``se``; ``se < 0``.
    """
    alpha = _check_open_unit(alpha, "alpha")
    eps0 = _check_open_unit(eps0, "eps0")
    eps, se = torch.as_tensor(eps), torch.as_tensor(se)
    dtype = torch.promote_types(torch.promote_types(eps.dtype, se.dtype), torch.get_default_dtype())
    eps, se = eps.to(dtype), se.to(dtype)
    if not (torch.isfinite(eps).all() and torch.isfinite(se).all()):
        raise ValueError("eps and se must be finite")
    if (se < 0).any():
        raise ValueError("se must be >= 0")
    z = _z(alpha)
    upper = eps + z * se
    statistic = _statistic(eps - eps0, se)
    return AbsoluteTest(
        eps=eps, se=se, threshold=eps0, alpha=alpha, z=z, upper=upper,
        statistic=statistic, p_value=torch.special.ndtr(statistic), reject=upper < eps0,
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
        se: ``(k,)`` their bootstrap standard errors.
        diff: ``(k, k)`` ``eps_i - eps_j``.
        diff_se: ``(k, k)`` bootstrap standard error of ``eps_i - eps_j`` (paired over replicates).
        p_value: ``(k, k)`` one-sided normal p-value of ``H0: eps_i >= eps_j``,
            ``Phi(diff / diff_se)``, **uncorrected** (multiply by ``n_tests`` for Bonferroni).
        decision: ``(k, k)`` bool, ``decision[i, j]``: ``H0: eps_i >= eps_j`` rejected, i.e. model
            ``i`` declared better than ``j`` (``diff + z diff_se < 0``); never true on the diagonal.
        wins: ``(k,)`` Borda score: the number of models each one is declared better than.
        ranking: ``(k,)`` model indices best first: by ``wins`` descending, ties by ``eps``.
        z: the critical value used, ``z_{1 - alpha / n_tests}`` under Bonferroni.
        alpha: family-wise level.
        n_tests: number of one-sided tests in the family, ``k (k - 1)``.
        correction: ``"bonferroni"`` or ``"none"``.
        reduction: ``"mean"`` or ``"sum"``.
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
    rejected when ``eps_i - eps_j + z se(eps_i - eps_j) < 0`` with ``z = z_{1 - alpha / (k(k-1))}``
    (Bonferroni over the ``k(k-1)`` ordered pairs), and the Borda ranking of the resulting
    tournament (a model scores one point for each model it is declared better than).
    ``se(eps_i - eps_j)`` is the standard deviation over bootstrap replicates of the difference,
    so the correlation between ``eps_i`` and ``eps_j`` is accounted for.

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
    z = _z(_CORRECTIONS[correction](alpha, n_tests))
    if atol is None:
        atol = 64 * torch.finfo(eps.dtype).eps
    snap = lambda t: torch.where(t.abs() <= atol, torch.zeros_like(t), t)  # noqa: E731
    diff = snap(eps[:, None] - eps[None, :])
    diff_se = snap((reps[:, :, None] - reps[:, None, :]).std(0))
    decision = diff + z * diff_se < 0
    decision.fill_diagonal_(False)
    wins = decision.sum(-1)
    order = sorted(range(k), key=lambda i: (-int(wins[i]), float(eps[i]), i))
    return RelativeTest(
        eps=eps, se=reps.std(0), diff=diff, diff_se=diff_se,
        p_value=torch.special.ndtr(_statistic(diff, diff_se)), decision=decision, wins=wins,
        ranking=torch.tensor(order), z=z, alpha=alpha, n_tests=n_tests, correction=correction,
        reduction=reduction,
    )
