"""The table of violation estimators ``D(P ≽ Q)`` (DESIGN.md §2).

Every entry of :data:`ESTIMATORS` is ``fn(x, a, y, b, cost, **options) -> ViolationResult`` on
validated clouds (:func:`multidom.core.clouds.check_pair`): ``x: (..., n, d)``, ``a: (..., n)``,
``y: (..., m, d)``, ``b: (..., m)``; the result tensors carry the batch shape ``(...)`` first.
Each entry declares the options it accepts (with defaults); :func:`run` refuses any other name.

==============  =================================================================  ===============
name            value                                                              zero when
==============  =================================================================  ===============
``exact``       ``min_pi <pi, C>``, ``C_ij = sum_k h(y_jk - x_ik)`` (POT ``ot.emd``)   ``P ≽ Q`` jointly
``quantile``    ``sum_k D_h^{1D}(P_k, Q_k)`` over the ``d`` marginals (sorting)     every marginal
``sliced``      ``mean_l D_h^{1D}(<theta_l, P>, <theta_l, Q>)``, theta_l >= 0, |.|=1  every projection
                (the ``d`` coordinate axes are always among the ``L`` directions)
``sinkhorn``    ``min_pi <pi, C> + reg KL(pi | a x b)`` (:mod:`multidom.core.sinkhorn`)   (reg -> 0)
==============  =================================================================  ===============

The separable cost is projected for ``sliced`` by applying the 1-D ``h`` to the projected
difference ``<theta, y> - <theta, x>`` (not ``sum_k theta_k h(y_k - x_k)``, which would just be a
weighted ``quantile``). This is a choice: it makes ``sliced`` zero exactly when every non-negative
projection dominates, which sits between joint and marginal dominance (Rioux et al.,
arXiv 2406.06425), and it keeps the ``hinge``/``logistic`` tie of :attr:`Cost.tie_slope`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

import numpy as np
import torch

from multidom.core.clouds import ViolationResult
from multidom.core.costs import Cost, cost_matrix
from multidom.core.ot1d import ot1d
from multidom.core.sinkhorn import sinkhorn_estimator

__all__ = ["ESTIMATORS", "DIRECTIONS", "Estimator", "run", "sliced_directions", "SOLVER_DEFAULT"]

SOLVER_DEFAULT: Any = object()
"""Marks an option whose default the estimator's own solver chooses (only passed when given)."""


@dataclass(frozen=True)
class Estimator:
    """One row of the estimator table.

    Attributes:
        fn: ``fn(x, a, y, b, cost, **options) -> ViolationResult``.
        options: accepted option names and their defaults (:data:`SOLVER_DEFAULT`: left to ``fn``).
        statistic: ``statistic(x, **options) -> (..., n)`` (all options of the entry passed), the
            linear functional ``s`` such that
            for costs with a tie slope ``k``, ``D(Q, P) = D(P, Q) + k (E_P s - E_Q s)``.
        summary: one line for error messages and docs.
    """

    fn: Callable[..., ViolationResult]
    options: Mapping[str, Any] = field(default_factory=dict)
    statistic: Callable[..., torch.Tensor] | None = None
    summary: str = ""


# --------------------------------------------------------------------------------------- exact
def _exact(
    x: torch.Tensor, a: torch.Tensor, y: torch.Tensor, b: torch.Tensor, cost: Cost,
    *, return_plan: bool = True, num_iter_max: int = 1_000_000,
) -> ViolationResult:
    """Unregularised OT by the network simplex (POT ``ot.emd``), one problem per batch entry.

    Gradients: in the points through ``<pi*, C(x, y)>`` with the optimal plan held fixed (Danskin);
    in the weights through the dual potentials, ``dD/da = f`` (``dD/db = g``). The returned ``f``,
    ``g`` are centred (``sum_i a_i f_i = 0``), as the gradient in raw weights is.

    Zero-weight (masked) points: POT's network simplex leaves their duals at values that satisfy
    the constraints but are not tight (e.g. ``-1.29`` where the c-transform is ``+0.21``), which
    gives a weight gradient of the wrong sign for "what would this sample cost if included". They
    are replaced by the c-transforms over the other cloud's support,
    ``f_i = min_{j: b_j > 0} (C_ij - g_j)`` for ``a_i = 0`` (then ``g_j = min_{i: a_i > 0}
    (C_ij - f_i)`` for ``b_j = 0``): the largest feasible value, i.e. the right derivative of
    ``D`` when mass is moved onto the point (:func:`_tight_potentials`).
    """
    import ot

    C = cost_matrix(x, y, cost)  # (..., n, m)
    batch, n, m = C.shape[:-2], C.shape[-2], C.shape[-1]
    C_np = C.detach().reshape(-1, n, m).cpu().double().numpy()
    a_np = a.detach().reshape(-1, n).cpu().double().numpy()
    b_np = b.detach().reshape(-1, m).cpu().double().numpy()
    plans, fs, gs = [], [], []
    for k in range(C_np.shape[0]):
        ak, bk = a_np[k] / a_np[k].sum(), b_np[k] / b_np[k].sum()
        G, log = ot.emd(ak, bk, C_np[k], numItermax=num_iter_max, log=True)
        if log["warning"] is not None:
            raise RuntimeError(f"ot.emd did not converge ({log['warning']}); raise num_iter_max")
        plans.append(G)
        u, v = _tight_potentials(C_np[k], ak, bk, log["u"], log["v"])
        fs.append(u)
        gs.append(v)
    as_t = lambda arr: torch.as_tensor(np.stack(arr), dtype=C.dtype, device=C.device)  # noqa: E731
    plan = as_t(plans).reshape(*batch, n, m)
    f = as_t(fs).reshape(*batch, n)
    g = as_t(gs).reshape(*batch, m)
    f = f - (a.detach() * f).sum(-1, keepdim=True)
    g = g - (b.detach() * g).sum(-1, keepdim=True)
    transport = (plan * C).sum((-2, -1))
    # envelope theorem in the weights: D = <a, f> + <b, g> (+ constant on the simplex)
    value = transport + ((a - a.detach()) * f).sum(-1) + ((b - b.detach()) * g).sum(-1)
    return ViolationResult(value, value, plan if return_plan else None, f, g)


def _tight_potentials(
    C: np.ndarray, a: np.ndarray, b: np.ndarray, f: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dual potentials with the c-transform on zero-weight points (``C (n, m)``, ``a (n,)``, ``b (m,)``).

    ``f_i = min_{j: b_j > 0} (C_ij - g_j)`` where ``a_i = 0``, then ``g_j = min_{i: a_i > 0}
    (C_ij - f_i)`` where ``b_j = 0``; potentials of points with mass are returned unchanged.
    """
    f, g = f.copy(), g.copy()
    za, zb = a <= 0, b <= 0
    if za.any():
        f[za] = (C[np.ix_(za, ~zb)] - g[~zb]).min(1)
    if zb.any():
        g[zb] = (C[np.ix_(~za, zb)] - f[~za, None]).min(0)
    return f, g


def _coordinate_sum(x: torch.Tensor, **_: Any) -> torch.Tensor:
    return x.sum(-1)


# ------------------------------------------------------------------------------------ quantile
def _quantile(
    x: torch.Tensor, a: torch.Tensor, y: torch.Tensor, b: torch.Tensor, cost: Cost
) -> ViolationResult:
    """``sum_k D_h^{1D}(P_k ≽ Q_k)``: the exact 1-D violation of each attribute, summed.

    ``O(d (n + m) log(n + m))``. Equals ``exact`` when ``d = 1`` and is ``<= exact`` for ``d > 1``
    (a joint coupling induces one coupling per attribute).
    """
    aa = a.unsqueeze(-2).expand(*x.shape[:-2], x.shape[-1], x.shape[-2])
    bb = b.unsqueeze(-2).expand(*y.shape[:-2], y.shape[-1], y.shape[-2])
    value = ot1d(x.transpose(-1, -2), y.transpose(-1, -2), cost.h, aa, bb).sum(-1)
    return ViolationResult(value, value)


# -------------------------------------------------------------------------------------- sliced
def _random_directions(d: int, n_directions: int, seed: int | None) -> torch.Tensor:
    """``|z| / ||z||`` for ``z ~ N(0, I_d)``: uniform on the non-negative orthant of the sphere."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    z = torch.randn(n_directions, d, generator=gen, dtype=torch.float64).abs()
    return z / z.norm(dim=-1, keepdim=True)


@lru_cache(maxsize=64)
def _qmc_directions(d: int, n_directions: int, seed: int | None) -> torch.Tensor:
    """A fixed quasi-random set: scrambled Sobol points (scipy, seed 0) mapped to half-normal
    coordinates by ``Phi^{-1}((1 + s) / 2)`` and normalised. ``seed`` is ignored (the set is fixed)."""
    from scipy.stats import norm, qmc

    s = qmc.Sobol(d, scramble=True, seed=0).random_base2(max(0, math.ceil(math.log2(n_directions))))
    z = norm.ppf(0.5 * (1.0 + s[:n_directions])) + 1e-12
    return torch.as_tensor(z / np.linalg.norm(z, axis=-1, keepdims=True), dtype=torch.float64)


DIRECTIONS: dict[str, Callable[[int, int, int | None], torch.Tensor]] = {
    "random": _random_directions,
    "qmc": _qmc_directions,
}


def sliced_directions(
    d: int, n_directions: int = 64, directions: str = "random", seed: int | None = None
) -> torch.Tensor:
    """``(L, d)`` float64 unit directions with non-negative entries, ``L = n_directions``.

    The first ``d`` rows are the coordinate axes ``e_1, ..., e_d``; the other ``L - d`` come from
    :data:`DIRECTIONS` (``directions``, ``seed``). With the axes among the slices, ``sliced`` is
    never blind to a violated marginal: ``D_sliced >= (1/L) max_k D_h^{1D}(P_k ≽ Q_k)``, so
    "sliced = 0" implies marginal dominance for every ``L`` (DESIGN.md §8). Directions strictly
    inside the orthant can miss one: ``X = {(10, -0.01)}``, ``Y = {(0, 0)}`` has every projection
    with ``theta_1 > 0.001`` dominating, while attribute 2 is violated by 0.01.

    Raises:
        ValueError: unknown ``directions`` (valid names listed), ``n_directions < d`` (``< 1``
            when ``d = 1``).
    """
    if directions not in DIRECTIONS:
        raise ValueError(f"unknown directions {directions!r}; valid: {', '.join(DIRECTIONS)}")
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise ValueError(f"n_directions must be an integer >= 1, got {n_directions!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    if d == 1:
        return torch.ones(1, 1, dtype=torch.float64)  # every direction is +1: one slice suffices
    if n_directions < d:
        raise ValueError(
            f"n_directions must be >= d = {d} (the {d} coordinate axes are always among the directions), "
            f"got {n_directions}"
        )
    axes = torch.eye(d, dtype=torch.float64)
    if n_directions == d:
        return axes
    return torch.cat([axes, DIRECTIONS[directions](d, n_directions - d, seed)], 0)


def _sliced(
    x: torch.Tensor, a: torch.Tensor, y: torch.Tensor, b: torch.Tensor, cost: Cost,
    *, n_directions: int = 64, directions: str = "random", seed: int | None = None,
) -> ViolationResult:
    """``(1/L) sum_l D_h^{1D}(<theta_l, P> ≽ <theta_l, Q>)`` over ``L`` directions ``theta_l >= 0``
    (the ``d`` axes and ``L - d`` drawn ones, :func:`sliced_directions`).

    The same directions serve every batch entry. ``O(L (n + m) log(n + m))`` after the ``O(L d n)``
    projection.
    """
    theta = sliced_directions(x.shape[-1], n_directions, directions, seed).to(x)  # (L, d)
    L = theta.shape[0]
    px = (x @ theta.T).transpose(-1, -2)  # (..., L, n)
    py = (y @ theta.T).transpose(-1, -2)  # (..., L, m)
    aa = a.unsqueeze(-2).expand(*a.shape[:-1], L, a.shape[-1])
    bb = b.unsqueeze(-2).expand(*b.shape[:-1], L, b.shape[-1])
    value = ot1d(px, py, cost.h, aa, bb).mean(-1)
    return ViolationResult(value, value)


def _sliced_statistic(
    x: torch.Tensor, *, n_directions: int = 64, directions: str = "random", seed: int | None = None,
) -> torch.Tensor:
    theta = sliced_directions(x.shape[-1], n_directions, directions, seed).to(x)
    return x @ theta.mean(0)


# ------------------------------------------------------------------------------------ sinkhorn
ESTIMATORS: dict[str, Estimator] = {
    "exact": Estimator(
        _exact, {"return_plan": True, "num_iter_max": 1_000_000}, _coordinate_sum,
        "unregularised OT by linear programming (POT ot.emd); small clouds, ground truth",
    ),
    "quantile": Estimator(
        _quantile, {}, _coordinate_sum, "sum over attributes of the exact 1-D violation"
    ),
    "sliced": Estimator(
        _sliced, {"n_directions": 64, "directions": "random", "seed": None}, _sliced_statistic,
        "mean 1-D violation over L non-negative directions (the d axes among them)",
    ),
    "sinkhorn": Estimator(
        sinkhorn_estimator,  # its signature holds the options' defaults (the one place they are set)
        {
            "reg": SOLVER_DEFAULT, "backend": SOLVER_DEFAULT, "max_iter": SOLVER_DEFAULT, "tol": SOLVER_DEFAULT,
            "eps_scaling": SOLVER_DEFAULT, "return_plan": SOLVER_DEFAULT, "on_unconverged": SOLVER_DEFAULT,
        },
        _coordinate_sum,
        "entropic OT with the separable cost (log-domain Sinkhorn; builtin/pot/geomloss)",
    ),
}


def resolve_options(estimator: str, options: Mapping[str, Any]) -> tuple[Estimator, dict[str, Any]]:
    """Look ``estimator`` up and merge ``options`` over its defaults.

    Raises:
        ValueError: unknown estimator (valid names listed) or an option it does not accept (the
            accepted ones listed).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; valid estimators: {', '.join(ESTIMATORS)}")
    est = ESTIMATORS[estimator]
    bad = sorted(set(options) - set(est.options))
    if bad:
        valid = ", ".join(est.options) or "none"
        raise ValueError(
            f"option(s) {', '.join(map(repr, bad))} do not apply to estimator {estimator!r}; "
            f"its options are: {valid}"
        )
    merged = {k: options.get(k, v) for k, v in est.options.items()}
    return est, {k: v for k, v in merged.items() if v is not SOLVER_DEFAULT}


def run(
    estimator: str, x: torch.Tensor, a: torch.Tensor, y: torch.Tensor, b: torch.Tensor,
    cost: Cost, **options: Any,
) -> ViolationResult:
    """Evaluate ``ESTIMATORS[estimator]`` on validated clouds with checked options."""
    est, opts = resolve_options(estimator, options)
    return est.fn(x, a, y, b, cost, **opts)
