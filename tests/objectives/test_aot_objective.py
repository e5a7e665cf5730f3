"""AOT objective on per-sequence scalars: hand-derived values, TRL's label smoothing, unequal sizes, soft sort."""
from __future__ import annotations

import math

import pytest
import torch

from multidom.core.spec import DominanceSpec
from multidom.objectives.aot import aot_paired_loss, aot_unpaired_loss, soft_sort


def spec(cost: str, **kw) -> DominanceSpec:
    return DominanceSpec(estimator="quantile", cost=cost, normalisation="none", **kw)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_unpaired_hand_values():
    u = torch.tensor([3.0, -1.0, 0.0])  # sorted: -1, 0, 3
    v = torch.tensor([1.0, 2.0, -2.0])  # sorted: -2, 1, 2
    # logistic, beta = 1: mean softplus(v_(i) - u_(i)) = (softplus(-1) + softplus(1) + softplus(-1)) / 3
    expected = (_softplus(-1) + _softplus(1) + _softplus(-1)) / 3
    assert float(aot_unpaired_loss(u, v, beta=1.0)) == pytest.approx(expected, rel=1e-6)
    # hinge: mean max(v_(i) - u_(i), 0) = (0 + 1 + 0) / 3
    assert float(aot_unpaired_loss(u, v, beta=1.0, spec=spec("hinge"))) == pytest.approx(1 / 3)
    # beta scales the implicit rewards: hinge(beta t) = beta hinge(t)
    assert float(aot_unpaired_loss(u, v, beta=0.5, spec=spec("hinge"))) == pytest.approx(1 / 6)
    # squared hinge with margin 1: max(-1 + 1, 0)^2, max(1 + 1, 0)^2, max(-1 + 1, 0)^2 -> 4 / 3
    assert float(aot_unpaired_loss(u, v, beta=1.0, spec=spec("squared_hinge", margin=1.0))) == pytest.approx(4 / 3)


def test_label_smoothing_is_trls_formula():
    u = torch.tensor([0.5, -0.2, 1.5, 0.1])
    v = torch.tensor([0.0, 0.3, -1.0, 2.0])
    beta, ls = 0.7, 0.3
    delta = u.sort().values - v.sort().values
    # TRL dpo_trainer.py, aot_unpaired: -logsigmoid(beta d)(1 - ls) - logsigmoid(-beta d) ls, averaged
    by_hand = sum((1 - ls) * _softplus(-beta * float(d)) + ls * _softplus(beta * float(d)) for d in delta) / 4
    got = aot_unpaired_loss(u, v, beta=beta, label_smoothing=ls)
    assert float(got) == pytest.approx(by_hand, rel=1e-6)


def test_paired_sorts_policy_and_reference_margins_apart():
    z = torch.tensor([2.0, -1.0])  # sorted -1, 2
    z_ref = torch.tensor([0.0, 1.0])  # sorted 0, 1
    expected = (_softplus(0.0 - -1.0) + _softplus(1.0 - 2.0)) / 2  # beta = 1
    assert float(aot_paired_loss(z, z_ref, beta=1.0)) == pytest.approx(expected, rel=1e-6)


def test_unequal_sizes_use_the_quantile_coupling():
    u = torch.tensor([0.0, 1.0])  # each mass 1/2
    v = torch.tensor([0.0, 0.0, 3.0, 3.0])  # each mass 1/4
    # quantiles: u = 0 on (0, 1/2], 1 on (1/2, 1]; v = 0 on (0, 1/2], 3 on (1/2, 1]
    # hinge: 1/2 * max(0 - 0, 0) + 1/2 * max(3 - 1, 0) = 1
    assert float(aot_unpaired_loss(u, v, beta=1.0, spec=spec("hinge"))) == pytest.approx(1.0)


def test_gradient_pushes_chosen_up_and_rejected_down():
    u = torch.tensor([0.0, 1.0], requires_grad=True)
    v = torch.tensor([0.5, 0.2], requires_grad=True)
    aot_unpaired_loss(u, v, beta=1.0).backward()
    assert (u.grad < 0).all() and (v.grad > 0).all()


def test_soft_sort_converges_to_sort_and_is_smooth():
    x = torch.tensor([0.3, -1.2, 2.0, 0.9])
    torch.testing.assert_close(soft_sort(x, 1e-3), x.sort().values)
    xs = x.clone().requires_grad_(True)
    soft = aot_unpaired_loss(xs, torch.zeros(4), beta=1.0, soft_sort_tau=1.0)
    soft.backward()
    assert torch.isfinite(xs.grad).all() and (xs.grad != 0).all()
    hard = aot_unpaired_loss(x, torch.zeros(4), beta=1.0)
    assert float(aot_unpaired_loss(x, torch.zeros(4), beta=1.0, soft_sort_tau=1e-3)) == pytest.approx(float(hard))


@pytest.mark.parametrize(
    "u, v, kwargs, match",
    [
        (torch.zeros(0), torch.zeros(3), {}, "chosen_logratios is empty"),
        (torch.zeros(3), torch.zeros(0), {}, "rejected_logratios is empty"),
        (torch.zeros(3, 1), torch.zeros(3), {}, "1-D tensor"),
        (torch.tensor([float("nan")]), torch.zeros(1), {}, "NaN"),
        (torch.zeros(2), torch.zeros(2), {"label_smoothing": 0.5}, "label_smoothing"),
        (torch.zeros(2), torch.zeros(2), {"beta": 0.0}, "beta"),
        (torch.zeros(2), torch.zeros(2), {"beta": "0.1"}, "beta"),
        (torch.zeros(2), torch.zeros(2), {"spec": DominanceSpec(estimator="quantile")}, "normalisation must be 'none'"),
        (torch.zeros(2), torch.zeros(3), {"soft_sort_tau": 0.1}, "soft sort"),
    ],
)
def test_bad_inputs(u, v, kwargs, match):
    with pytest.raises(ValueError, match=match):
        aot_unpaired_loss(u, v, **kwargs)


def test_unknown_cost_is_refused_when_the_spec_is_built():
    with pytest.raises(ValueError, match="unknown cost 'hinj'; did you mean 'hinge'"):
        spec("hinj")
