"""Public API (multidom.violation / violation_ratio / solve): shapes, the ratio's identities, the
hinge/logistic tie, del Barrio's eps_W2, and clear ValueErrors for bad input."""
import numpy as np
import pytest
import torch

import multidom
from multidom.core.costs import COSTS
from multidom.core.estimators import ESTIMATORS

T = dict(dtype=torch.float64)
UNREG = [("exact", {}), ("quantile", {}), ("sliced", {"seed": 0}), ("sliced", {"directions": "qmc"})]
ALL = UNREG + [("sinkhorn", {"reg": 0.1, "max_iter": 20_000})]  # hinge on P vs P needs ~6,600 iterations


def cloud(n, d, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, generator=g, **T) + 0.05
    return torch.randn(n, d, generator=g, **T) + shift, w


def test_shapes_unbatched_and_batched():
    x, y = torch.randn(5, 2), torch.randn(4, 2)
    assert multidom.violation(x, y, estimator="quantile").shape == ()
    xb, yb = torch.randn(3, 4, 5, 2), torch.randn(3, 4, 6, 2)
    for est, opts in ALL:
        assert multidom.violation(xb, yb, estimator=est, **opts).shape == (3, 4)
        assert multidom.violation_ratio(xb, yb, estimator=est, **opts).shape == (3, 4)


def test_raw_weights_are_normalised():
    (x, a), (y, b) = cloud(5, 2, 0), cloud(4, 2, 1)
    for est, opts in UNREG:
        v1 = multidom.violation((x, a), (y, b), estimator=est, **opts)
        v2 = multidom.violation((x, 7 * a), (y, b / 3), estimator=est, **opts)
        torch.testing.assert_close(v1, v2)


@pytest.mark.parametrize("est,opts", ALL)
@pytest.mark.parametrize("cost", COSTS)
def test_ratio_identities(est, opts, cost):
    # by construction for costs solved both ways (no tie); the values: test_ratio_matches_independent_oracle
    P, Q = cloud(6, 2, 2), cloud(5, 2, 3, shift=0.3)
    kw = dict(estimator=est, cost=cost, margin=0.0, **opts)
    assert multidom.violation_ratio(P, P, **kw).item() == pytest.approx(0.5, abs=1e-12)
    pq, qp = multidom.violation_ratio(P, Q, **kw), multidom.violation_ratio(Q, P, **kw)
    assert 0.0 <= pq.item() <= 1.0
    assert (pq + qp).item() == pytest.approx(1.0, abs=1e-6 if est == "sinkhorn" else 1e-12)


_H_NUMPY = {  # h(t) of every cost, written again here (gain g, margin m)
    "hinge": lambda t, g, m: np.maximum(t + m, 0.0),
    "squared_hinge": lambda t, g, m: np.maximum(t + m, 0.0) ** 2,
    "logistic": lambda t, g, m: np.logaddexp(0.0, g * (t + m)),
    "least_squares": lambda t, g, m: (t + m) ** 2,
}


def _oracle_violation(est, x, a, y, b, h, reg):
    """D(P ≽ Q) from POT on cost matrices built here: C_ij = h(y_j - x_i), summed per attribute."""
    import ot

    from multidom.core.estimators import sliced_directions

    x, y, a, b = x.numpy(), y.numpy(), a.numpy(), b.numpy()
    joint = sum(h(y[None, :, k] - x[:, None, k]) for k in range(x.shape[1]))
    if est == "exact":
        return ot.emd2(a, b, joint)
    if est == "quantile":
        return sum(ot.emd2(a, b, h(y[None, :, k] - x[:, None, k])) for k in range(x.shape[1]))
    if est == "sliced":
        theta = sliced_directions(x.shape[1], 64, "random", 0).numpy()
        return np.mean([ot.emd2(a, b, h((y @ t)[None, :] - (x @ t)[:, None])) for t in theta])
    plan = ot.bregman.sinkhorn_log(a, b, joint, reg, numItermax=100_000, stopThr=1e-13)
    kl = (plan * np.log(plan / np.outer(a, b))).sum()
    return (plan * joint).sum() + reg * kl


@pytest.mark.parametrize("est,opts", [("exact", {}), ("quantile", {}), ("sliced", {"seed": 0}),
                                      ("sinkhorn", {"reg": 0.2, "tol": 1e-10, "max_iter": 50_000})])
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("margin", [0.0, 0.1])  # 0: hinge/logistic take the one-solve tie; 0.1: two solves
def test_ratio_matches_independent_oracle(est, opts, cost, margin):
    # eps(P, Q) and eps(Q, P) against D(P ≽ Q), D(Q ≽ P) computed by POT on cost matrices built in the
    # test: fails if the second violation used a transposed matrix instead of its own, or a wrong tie.
    (x, a), (y, b) = cloud(6, 2, 2), cloud(5, 2, 3, shift=0.3)
    a, b = a / a.sum(), b / b.sum()
    h = lambda t: _H_NUMPY[cost](t, 0.7, margin)  # noqa: E731
    d_pq = _oracle_violation(est, x, a, y, b, h, opts.get("reg"))
    d_qp = _oracle_violation(est, y, b, x, a, h, opts.get("reg"))
    kw = dict(estimator=est, cost=cost, cost_gain=0.7, margin=margin, **opts)
    tol = 1e-7 if est == "sinkhorn" else 1e-10
    assert multidom.violation((x, a), (y, b), **kw).item() == pytest.approx(d_pq, abs=tol)
    assert multidom.violation_ratio((x, a), (y, b), **kw).item() == pytest.approx(d_pq / (d_pq + d_qp), abs=tol)
    assert multidom.violation_ratio((y, b), (x, a), **kw).item() == pytest.approx(d_qp / (d_pq + d_qp), abs=tol)
    if not (cost == "least_squares" and margin == 0.0):  # (t + 0)^2 is symmetric: D(P, Q) = D(Q, P)
        assert abs(d_pq - d_qp) > 1e-3  # the two directions differ: the check above is not 1/2 = 1/2


def test_ratio_is_zero_under_dominance_and_half_when_both_vanish():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], **T)
    assert multidom.violation_ratio(x + 1, x, estimator="exact").item() == 0.0
    assert multidom.violation_ratio(x, x + 1, estimator="exact").item() == 1.0
    # equal clouds under the unregularised hinge: D(P,Q) = D(Q,P) = 0 -> 1/2 with a finite (zero) gradient
    xg = x.clone().requires_grad_()
    eps = multidom.violation_ratio(xg, x, estimator="quantile")
    assert eps.item() == 0.5
    eps.backward()
    assert torch.equal(xg.grad, torch.zeros_like(x))


@pytest.mark.parametrize("est,opts", ALL)
@pytest.mark.parametrize("cost,beta,k", [("hinge", 1.0, 1.0), ("logistic", 0.6, 0.6)])
def test_tie_holds_for_hinge_and_logistic(est, opts, cost, beta, k):
    # D(Q,P) = D(P,Q) + k (E_P s - E_Q s): s = coordinate sum (mean projection for sliced)
    P, Q = cloud(6, 3, 4), cloud(7, 3, 5, shift=0.2)
    kw = dict(estimator=est, cost=cost, cost_gain=beta, **opts)
    d_pq, d_qp = multidom.violation(P, Q, **kw), multidom.violation(Q, P, **kw)
    stat = ESTIMATORS[est].statistic
    merged = {**{k_: v for k_, v in ESTIMATORS[est].options.items()}, **opts}
    s_p = (P[1] / P[1].sum() * stat(P[0], **merged)).sum()
    s_q = (Q[1] / Q[1].sum() * stat(Q[0], **merged)).sum()
    tol = 1e-6 if est == "sinkhorn" else 1e-12
    assert d_qp.item() == pytest.approx((d_pq + k * (s_p - s_q)).item(), abs=tol)
    # and the ratio from one solve equals the two-solve ratio
    assert multidom.violation_ratio(P, Q, **kw).item() == pytest.approx((d_pq / (d_pq + d_qp)).item(), abs=tol)


def test_tie_fails_for_squared_hinge():
    # (D(Q,P) - D(P,Q)) / (E_P s - E_Q s) would be a constant k if the tie held; it is not for squared_hinge
    ratios = {}
    for cost in ("hinge", "squared_hinge"):
        ratios[cost] = []
        for seed in range(3):
            P, Q = cloud(6, 2, 10 + seed), cloud(5, 2, 20 + seed, shift=0.5)
            d_pq = multidom.violation(P, Q, estimator="exact", cost=cost).item()
            d_qp = multidom.violation(Q, P, estimator="exact", cost=cost).item()
            mean = lambda c: (c[1] / c[1].sum() * c[0].sum(-1)).sum().item()  # noqa: E731
            ratios[cost].append((d_qp - d_pq) / (mean(P) - mean(Q)))
    assert ratios["hinge"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-10)
    assert max(ratios["squared_hinge"]) - min(ratios["squared_hinge"]) > 0.1
    # so violation_ratio must (and does) solve D(Q,P) on its own cost matrix for squared_hinge
    P, Q = cloud(6, 2, 10), cloud(5, 2, 20, shift=0.5)
    d_pq = multidom.violation(P, Q, estimator="exact", cost="squared_hinge")
    d_qp = multidom.violation(Q, P, estimator="exact", cost="squared_hinge")
    eps = multidom.violation_ratio(P, Q, estimator="exact", cost="squared_hinge")
    assert eps.item() == pytest.approx((d_pq / (d_pq + d_qp)).item(), abs=1e-14)


def test_squared_hinge_ratio_is_del_barrio_eps_w2():
    # eps_W2(P, Q) = int_{Q_P(t) < Q_Q(t)} (Q_Q(t) - Q_P(t))^2 dt / W2^2(P, Q), from quantile functions.
    # Quantile functions of the empirical laws are step functions with jumps at multiples of 1/n and
    # 1/m: midpoints of a grid of lcm(n, m) = 35 cells integrate them exactly.
    g = np.random.default_rng(0)
    u, v = g.normal(size=7), g.normal(0.3, 1.5, size=5)
    t = (np.arange(35) + 0.5) / 35
    qu, qv = np.quantile(u, t, method="inverted_cdf"), np.quantile(v, t, method="inverted_cdf")
    eps_w2 = np.mean(np.clip(qv - qu, 0, None) ** 2) / np.mean((qv - qu) ** 2)
    P, Q = torch.tensor(u)[:, None], torch.tensor(v)[:, None]
    for est in ("quantile", "exact", "sliced"):
        eps = multidom.violation_ratio(P, Q, estimator=est, cost="squared_hinge")
        assert eps.item() == pytest.approx(eps_w2, abs=1e-12)


def test_solve_returns_potentials_and_keeps_graph():
    (x, a), (y, b) = cloud(6, 1, 30), cloud(4, 1, 31)
    exact = multidom.solve((x, a), (y, b), estimator="exact", cost="logistic")
    ag = a.clone().requires_grad_()
    q = multidom.solve((x, ag), (y, b), estimator="quantile", cost="logistic")
    torch.testing.assert_close(q.f, exact.f, rtol=0, atol=1e-10)
    torch.testing.assert_close(q.g, exact.g, rtol=0, atol=1e-10)
    q.value.backward()  # graph kept after the potentials' backward
    # gradient in raw weights = centred potential / sum of raw weights
    torch.testing.assert_close(ag.grad, exact.f / a.sum(), rtol=0, atol=1e-10)
    with torch.no_grad():
        assert multidom.solve(x, y, estimator="sliced", seed=0).f.shape == (6,)


def test_solve_sinkhorn_plan_and_potentials():
    (x, a), (y, b) = cloud(6, 2, 40), cloud(4, 2, 41)
    res = multidom.solve((x, a), (y, b), estimator="sinkhorn", reg=0.1, return_plan=True)
    assert res.plan.shape == (6, 4) and res.f.shape == (6,) and res.g.shape == (4,)
    assert (a / a.sum() * res.f).sum().abs() < 1e-10


# ------------------------------------------------------------------------------------ bad input
BAD = [
    (lambda: multidom.violation(torch.randn(4, 2), torch.randn(4, 3), estimator="quantile"), "attribute counts"),
    (lambda: multidom.violation(torch.randn(0, 2), torch.randn(4, 2), estimator="quantile"), "empty"),
    (lambda: multidom.violation(torch.tensor([[float("nan")]]), torch.randn(4, 1), estimator="quantile"), "NaN"),
    (lambda: multidom.violation(torch.randn(3, 1), torch.tensor([[float("inf")]]), estimator="exact"), "NaN or inf"),
    (lambda: multidom.violation((torch.randn(2, 1), torch.tensor([1.0, -1.0])), torch.randn(4, 1),
                                estimator="quantile"), ">= 0"),
    (lambda: multidom.violation((torch.randn(2, 1), torch.zeros(2)), torch.randn(4, 1), estimator="quantile"),
     "all zero"),
    (lambda: multidom.violation(torch.randn(4, 1), torch.randn(4, 1), estimator="wasserstein"),
     "valid estimators: exact, quantile, sliced, sinkhorn"),
    (lambda: multidom.violation(torch.randn(4, 1), torch.randn(4, 1), estimator="quantile", cost="relu"),
     "valid costs: hinge, squared_hinge, logistic, least_squares"),
    (lambda: multidom.violation(torch.randn(4, 1), torch.randn(4, 1), estimator="sinkhorn", backend="ott"),
     "builtin"),
    (lambda: multidom.violation(torch.randn(4, 1), torch.randn(4, 1), estimator="sinkhorn", reg=0.0), "reg"),
    (lambda: multidom.violation(torch.randn(4, 1), torch.randn(4, 1), estimator="sinkhorn", reg=-1.0), "reg"),
    (lambda: multidom.violation_ratio(torch.randn(4, 1), torch.randn(4, 1), estimator="sinkhorn", reg=0), "reg"),
    (lambda: multidom.violation(torch.randn(4, 1), torch.randn(4, 1), estimator="quantile", reg=0.1),
     "do not apply to estimator 'quantile'; its options are: none"),
    (lambda: multidom.violation(torch.randn(4, 1), torch.randn(4, 1), estimator="sliced", n_dirs=3),
     "its options are: n_directions, directions, seed"),
    (lambda: multidom.violation(torch.randn(4, 2), torch.randn(4, 2), estimator="sliced", directions="sobol"),
     "valid: random, qmc"),
    (lambda: multidom.violation(torch.randn(4, 2), torch.randn(4, 2), estimator="sliced", n_directions=0),
     "n_directions"),
    (lambda: multidom.violation(torch.randn(4, 2), torch.randn(4, 2), estimator="quantile", part="plan"),
     "valid parts: value, transport"),
    (lambda: multidom.violation(torch.randn(2, 4, 2), torch.randn(3, 4, 2), estimator="quantile"), "batch shapes"),
    (lambda: multidom.solve(torch.randn(4, 1), torch.randn(4, 1), estimator="quantile", seed=1), "seed"),
]


@pytest.mark.parametrize("call,match", BAD)
def test_bad_input_raises_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("value", [3.6256e-48, 1e-3, 7.0])
def test_equal_clouds_of_different_sizes_are_a_tie_despite_rounding(value):
    # found by hypothesis: one point vs the same point three times (weights 1/3 each); the weighted means differ by
    # rounding only, which must not count as a violation in the one-solve tie (hinge, exact)
    P = (torch.full((1, 1), value, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    Q = (torch.full((3, 1), value, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    kw = dict(estimator="exact", cost="hinge")
    assert multidom.violation_ratio(P, Q, **kw).item() == pytest.approx(0.5, abs=1e-12)
    assert multidom.violation_ratio(Q, P, **kw).item() == pytest.approx(0.5, abs=1e-12)
