"""Costs ``h`` (DESIGN.md §1): hand-derived values, the cost matrix, the hinge/logistic tie, errors."""
import math

import pytest
import torch

from multidom.core.costs import COSTS, cost_matrix, get_cost


def h(name, t, **kw):
    return get_cost(name, **kw).h(torch.tensor(t, dtype=torch.float64)).tolist()


def test_hinge_hand_values():
    # max(t + m, 0) with m = 0.5: t = -1 -> max(-0.5, 0) = 0; t = 0 -> 0.5; t = 2 -> 2.5
    assert h("hinge", [-1.0, 0.0, 2.0], margin=0.5) == [0.0, 0.5, 2.5]
    # m = 0: a point that loses (t < 0) costs nothing, one that wins by 3 costs 3
    assert h("hinge", [-2.0, 3.0]) == [0.0, 3.0]


def test_squared_hinge_hand_values():
    # max(t, 0)^2: t = -1 -> 0, t = 3 -> 9; with m = 1: t = -0.5 -> 0.5^2 = 0.25
    assert h("squared_hinge", [-1.0, 3.0]) == [0.0, 9.0]
    assert h("squared_hinge", [-0.5], margin=1.0) == [0.25]


def test_logistic_hand_values():
    # log(1 + exp(beta (t + m))): beta = 2, t = 0 -> log 2; t = 1 -> log(1 + e^2) = 2.1269280110429727
    out = h("logistic", [0.0, 1.0], gain=2.0)
    assert out[0] == pytest.approx(math.log(2.0), abs=1e-15)
    assert out[1] == pytest.approx(2.1269280110429727, abs=1e-14)
    # beta = 1, m = 0.5, t = -0.5 -> log(1 + e^0) = log 2
    assert h("logistic", [-0.5], margin=0.5)[0] == pytest.approx(math.log(2.0), abs=1e-15)


def test_logistic_is_trl_aot_form():
    # TRL: -logsigmoid(beta * (u - v)); here t = v - u
    u, v, beta = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64), 0.3
    trl_form = -torch.nn.functional.logsigmoid(beta * (u - v))
    torch.testing.assert_close(get_cost("logistic", gain=beta).h(v - u), trl_form, rtol=0, atol=1e-15)


def test_least_squares_hand_values():
    # (t + m)^2: t = -1 -> 1 (it penalises winning too: not a dominance relaxation); m = 1, t = 1 -> 4
    assert h("least_squares", [-1.0, 2.0]) == [1.0, 4.0]
    assert h("least_squares", [1.0], margin=1.0) == [4.0]


def test_logistic_float32_does_not_overflow():
    out = get_cost("logistic", gain=10.0).h(torch.tensor([1000.0, -1000.0], dtype=torch.float32))
    assert torch.isfinite(out).all()
    assert out.tolist() == [10000.0, 0.0]


def test_cost_matrix_hand_values():
    # C_ij = sum_k h(y_jk - x_ik), hinge: x_0 = (0, 0), y_0 = (1, 1): 1 + 1 = 2;
    # x_1 = (1, 2), y_0: h(0) + h(-1) = 0; x_0, y_1 = (0, 3): h(0) + h(3) = 3; x_1, y_1: h(-1) + h(1) = 1
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    assert cost_matrix(x, y, get_cost("hinge")).tolist() == [[2.0, 3.0], [0.0, 1.0]]


def test_cost_matrix_batched_equals_loop():
    x, y = torch.randn(3, 5, 4), torch.randn(3, 6, 4)
    c = get_cost("squared_hinge", margin=0.1)
    full = cost_matrix(x, y, c)
    assert full.shape == (3, 5, 6)
    for i in range(3):
        ref = c.h(y[i][None, :, :] - x[i][:, None, :]).sum(-1)
        torch.testing.assert_close(full[i], ref)


@pytest.mark.parametrize("name,beta,k", [("hinge", 1.0, 1.0), ("logistic", 0.7, 0.7)])
def test_tie_slope_holds(name, beta, k):
    # h(t) - h(-t) = k t: hinge max(t,0) - max(-t,0) = t; softplus(bt) - softplus(-bt) = bt
    c = get_cost(name, gain=beta)
    assert c.tie_slope == k
    t = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(c.h(t) - c.h(-t), k * t, rtol=0, atol=1e-12)


def test_tie_slope_fails_for_squared_hinge_and_margins():
    # max(t,0)^2 - max(-t,0)^2 = t |t|: not linear, so there is no k
    c = get_cost("squared_hinge")
    assert c.tie_slope is None
    t = torch.tensor([1.0, 2.0], dtype=torch.float64)
    ratio = (c.h(t) - c.h(-t)) / t
    assert ratio.tolist() == [1.0, 2.0]
    assert get_cost("hinge", margin=0.1).tie_slope is None


def test_get_cost_errors():
    with pytest.raises(ValueError, match="valid costs: " + ", ".join(COSTS)):
        get_cost("hingee")
    with pytest.raises(ValueError, match="cost_gain"):
        get_cost("logistic", gain=0.0)
    with pytest.raises(ValueError, match="margin"):
        get_cost("hinge", margin=-1.0)
    with pytest.raises(ValueError, match="margin"):
        get_cost("hinge", margin=float("nan"))
