"""Exact 1-D OT by the monotone coupling (multidom.core.ot1d): hand values, POT oracles, gradients."""
import numpy as np
import ot
import pytest
import torch

from multidom.core.costs import COSTS, get_cost
from multidom.core.ot1d import ot1d, quantile_coupling, quantile_plan

T = dict(dtype=torch.float64)
hinge = get_cost("hinge").h


def test_uniform_equal_sizes_hand_value():
    # sorted u = (0, 2), v = (1, 1): pairs (0,1) -> h(1) = 1, (2,1) -> h(-1) = 0; mean = 1/2
    assert ot1d(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]), hinge).item() == 0.5


def test_unequal_sizes_hand_value():
    # u = (0, 1, 2) w.p. 1/3 each, v = (1, 3) w.p. 1/2 each. Cumulative breakpoints 1/3, 1/2, 2/3, 1:
    # (0,1/3]: u=0,v=1 -> h(1)=1; (1/3,1/2]: u=1,v=1 -> 0; (1/2,2/3]: u=1,v=3 -> 2; (2/3,1]: u=2,v=3 -> 1
    # D = 1/3 * 1 + 1/6 * 0 + 1/6 * 2 + 1/3 * 1 = 1
    d = ot1d(torch.tensor([0.0, 1.0, 2.0], **T), torch.tensor([3.0, 1.0], **T), hinge)
    assert d.item() == pytest.approx(1.0, abs=1e-15)


def test_weighted_hand_value():
    # u = (0, 4) with weights (3/4, 1/4), v = (1,) : D = 3/4 h(1) + 1/4 h(-3) = 3/4
    d = ot1d(torch.tensor([4.0, 0.0], **T), torch.tensor([1.0], **T), hinge,
             torch.tensor([0.25, 0.75], **T), torch.tensor([1.0], **T))
    assert d.item() == 0.75


def test_coupling_masses_and_plan_marginals():
    a = torch.tensor([0.2, 0.5, 0.3], **T)
    b = torch.tensor([0.6, 0.4], **T)
    i, j, mass = quantile_coupling(a, b)
    # breakpoints 0.2, 0.6, 0.7, 1.0 (a) and 0.6, 1.0 (b): segments (0,.2](0,0) (.2,.6](1,0) (.6,.7](1,1) (.7,1](2,1)
    keep = mass > 1e-12
    assert list(zip(i[keep].tolist(), j[keep].tolist())) == [(0, 0), (1, 0), (1, 1), (2, 1)]
    torch.testing.assert_close(mass[keep], torch.tensor([0.2, 0.4, 0.1, 0.3], **T))
    u, v = torch.randn(7, **T), torch.randn(5, **T)
    wa, wb = torch.rand(7, **T), torch.rand(5, **T)
    wa, wb = wa / wa.sum(), wb / wb.sum()
    plan = quantile_plan(u, v, wa, wb)
    torch.testing.assert_close(plan.sum(-1), wa)
    torch.testing.assert_close(plan.sum(-2), wb)


@pytest.mark.parametrize("name", COSTS)
def test_matches_pot_emd2(name):
    g = torch.Generator().manual_seed(1)
    c = get_cost(name, gain=1.5, margin=0.2)
    for n, m in [(6, 6), (7, 4), (3, 9)]:
        u, v = torch.randn(n, generator=g, **T), torch.randn(m, generator=g, **T)
        wa, wb = torch.rand(n, generator=g, **T), torch.rand(m, generator=g, **T)
        wa, wb = wa / wa.sum(), wb / wb.sum()
        C = c.h(v[None, :] - u[:, None]).numpy()
        assert ot1d(u, v, c.h, wa, wb).item() == pytest.approx(ot.emd2(wa.numpy(), wb.numpy(), C), abs=1e-12)
        uni = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), C)
        assert ot1d(u, v, c.h).item() == pytest.approx(uni, abs=1e-12)


def test_least_squares_is_pot_wasserstein_1d_p2():
    u, v = torch.randn(9, **T), torch.randn(5, **T) + 1
    wa, wb = torch.rand(9, **T), torch.rand(5, **T)
    wa, wb = wa / wa.sum(), wb / wb.sum()
    w2 = ot.wasserstein_1d(u.numpy(), v.numpy(), wa.numpy(), wb.numpy(), p=2)
    assert ot1d(u, v, get_cost("least_squares").h, wa, wb).item() == pytest.approx(w2, abs=1e-12)


def test_fast_path_equals_merge_path_and_batches():
    u, v = torch.randn(4, 3, 8, **T), torch.randn(4, 3, 8, **T)
    h = get_cost("logistic").h
    fast = ot1d(u, v, h)
    merged = ot1d(u, v, h, torch.full_like(u, 1 / 8).requires_grad_(), torch.full_like(v, 1 / 8))
    assert fast.shape == (4, 3)
    torch.testing.assert_close(fast, merged.detach(), rtol=0, atol=1e-13)
    loop = torch.stack([torch.stack([ot1d(u[i, k], v[i, k], h) for k in range(3)]) for i in range(4)])
    torch.testing.assert_close(fast, loop)


def test_weight_gradient_is_emd_potential():
    # d D / d a equals POT's dual potential up to an additive constant (generic data: unique potentials)
    g = torch.Generator().manual_seed(3)
    u, v = torch.randn(6, generator=g, **T), torch.randn(4, generator=g, **T)
    wa, wb = torch.rand(6, generator=g, **T), torch.rand(4, generator=g, **T)
    wa, wb = (wa / wa.sum()).requires_grad_(), (wb / wb.sum()).requires_grad_()
    h = get_cost("squared_hinge").h
    ga, gb = torch.autograd.grad(ot1d(u, v, h, wa, wb), (wa, wb))
    C = h(v[None, :] - u[:, None]).numpy()
    _, log = ot.emd(wa.detach().numpy(), wb.detach().numpy(), C, log=True)
    for ours, pot in [(ga, log["u"]), (gb, log["v"])]:
        diff = ours.numpy() - pot
        np.testing.assert_allclose(diff, diff[0], atol=1e-10)


def test_gradcheck_points_and_weights():
    g = torch.Generator().manual_seed(4)
    u = torch.randn(5, generator=g, **T).requires_grad_()
    v = torch.randn(3, generator=g, **T).requires_grad_()
    wa = (torch.rand(5, generator=g, **T) + 0.1).requires_grad_()
    wb = (torch.rand(3, generator=g, **T) + 0.1).requires_grad_()
    # weights live on the simplex (off it the total mass has a kink): normalise raw weights, as the API does
    for name in ("logistic", "squared_hinge"):
        h = get_cost(name, gain=0.8).h
        fn = lambda u, v, wa, wb, h=h: ot1d(u, v, h, wa / wa.sum(), wb / wb.sum())  # noqa: E731
        assert torch.autograd.gradcheck(fn, (u, v, wa, wb))


def test_tie_gradient_is_middle_of_dual_set():
    # u = (0, 2), v = (1, 3) uniform: cumulative weights tie at 1/2. Costs c_ij = h(v_j - u_i), hinge:
    # [[1, 3], [0, 1]]; the monotone plan pairs (0,1) and (2,3): D = 1. Duals: f_i + g_j = c_ij on the plan,
    # f_1 + g_0 <= 0 and f_0 + g_1 <= 3 give g_1 - g_0 in [1, 2]. The one-sided pieces give 1 and 2;
    # their mean 1.5, centred: g = (-0.75, 0.75), f = (0.75, -0.75) (the low positive sample hurts).
    u, v = torch.tensor([0.0, 2.0], **T), torch.tensor([1.0, 3.0], **T)
    wa, wb = torch.ones(2, **T).requires_grad_(), torch.ones(2, **T).requires_grad_()
    d = ot1d(u, v, hinge, wa / wa.sum(), wb / wb.sum())
    assert d.item() == 1.0
    ga, gb = torch.autograd.grad(d, (wa, wb))
    # raw weights sum to 2: d D / d w = centred potential / 2
    torch.testing.assert_close(2 * ga, torch.tensor([0.75, -0.75], **T))
    torch.testing.assert_close(2 * gb, torch.tensor([-0.75, 0.75], **T))


@pytest.mark.parametrize("name,expected", [
    # u = (2, 0), v = (1, 1): sorted pairs give t = v_(i) - u_(i) = 1 - 0 = 1 and 1 - 2 = -1; D = (h(1) + h(-1)) / 2
    ("hinge", (1.0 + 0.0) / 2),
    ("squared_hinge", (1.0 + 0.0) / 2),
    ("logistic", (np.log1p(np.e) + np.log1p(np.exp(-1.0))) / 2),  # (1.3132616875 + 0.3132616875) / 2
    ("least_squares", (1.0 + 1.0) / 2),
])
def test_hand_value_every_cost(name, expected):
    u, v = torch.tensor([2.0, 0.0], **T), torch.tensor([1.0, 1.0], **T)
    assert ot1d(u, v, get_cost(name).h).item() == pytest.approx(expected, abs=1e-15)
    assert expected == pytest.approx({"logistic": 0.8132616875182228}.get(name, expected), abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,rep", [(2, 5), (3, 2), (5, 3)])
def test_near_tie_gradient_is_size_invariant(dtype, n, rep):
    # Q_rep repeats every point of an n-point cloud rep times: the same law, so the same violation and the
    # same potentials of P's points. Its cumulative weights i/n = (rep i)/(rep n) tie with P's only up to
    # float roundoff (e.g. 1/2 vs 5 * (1/10) in float32); the gradient must not depend on that.
    g = torch.Generator().manual_seed(n)
    u, v = torch.randn(n, generator=g, dtype=dtype), torch.randn(n, generator=g, dtype=dtype)
    h = get_cost("logistic").h

    def grad_a(v_pts):
        w = torch.ones(n, dtype=dtype, requires_grad=True)
        b = torch.ones(len(v_pts), dtype=dtype)
        d = ot1d(u, v_pts, h, w / w.sum(), b / b.sum())
        return d, torch.autograd.grad(d, w)[0]

    d1, g1 = grad_a(v)
    d2, g2 = grad_a(v.repeat_interleave(rep))
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert d2.item() == pytest.approx(d1.item(), abs=tol)
    torch.testing.assert_close(g2, g1, rtol=0, atol=tol)
    assert g1.abs().max() > 1e-3


@pytest.mark.parametrize("n, m", [(2048, 2048), (3000, 1500)])
def test_float32_weight_gradient_matches_float64_for_large_clouds(n, m):
    """Regression: the tie tolerance 2 (n + m) eps exceeded the spacing 1/n in float32 from
    n = m = 1449, chaining every breakpoint into one tie group (weight gradient 20-33% off)."""
    from multidom.core.costs import get_cost

    h = get_cost("logistic").h
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(n, generator=gen, dtype=torch.float64) + 0.3
    v = torch.randn(m, generator=gen, dtype=torch.float64)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        a = torch.full((n,), 1.0 / n, dtype=dtype, requires_grad=True)
        (g,) = torch.autograd.grad(ot1d(u.to(dtype), v.to(dtype), h, a, None), a)
        grads[dtype] = g.double() - g.double().mean()
    err = (grads[torch.float32] - grads[torch.float64]).abs().max() / grads[torch.float64].abs().max()
    assert err < 1e-4
