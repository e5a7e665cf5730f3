"""The online dominance objective (potentials from a DominanceSpec): hand numbers, masking, bad input."""
from __future__ import annotations

import pytest
import torch

from multidom.core.normalize import normalise_pair
from multidom.core.spec import DominanceSpec
from multidom.objectives.online import advantages_from_potentials, dominance_potentials


def spec(estimator: str, cost: str = "hinge", normalisation: str = "none", **options) -> DominanceSpec:
    """A spec on un-normalised points (the hand values below are computed on the raw clouds; the online reward
    tests in tests/trainers/test_online_reward.py use the same helper)."""
    return DominanceSpec(estimator=estimator, cost=cost, options=options, normalisation=normalisation)


# ----------------------------------------------------------------------------- hand-derived potentials
@pytest.mark.parametrize("estimator", ["quantile", "exact"])
def test_potentials_hand_values(estimator):
    # d = 1, policy x = (0, 2), baseline y = (1, 1), hinge. With a = (a1, 1 - a1) the quantile coupling
    # (= exact OT) gives D = a1 * h(1 - 0) + (1 - a1) * h(1 - 2) = a1. With raw weights w, a1 = w1 / (w1 + w2),
    # so dD/dw1 = w2 / (w1 + w2)^2 = 1/4 and dD/dw2 = -1/4; phi = n * dD/dw = (0.5, -0.5); A = -phi = (-0.5, 0.5).
    x = torch.tensor([[[0.0], [2.0]]])
    y = torch.tensor([[[1.0], [1.0]]])
    ones = torch.ones(1, 2, dtype=torch.bool)
    pot = dominance_potentials(x, ones, y, ones, spec(estimator))
    assert pot.phi[0].tolist() == pytest.approx([0.5, -0.5], abs=1e-6)
    assert float(pot.violation) == pytest.approx(0.5, abs=1e-6)
    assert advantages_from_potentials(pot.phi, pot.valid)[0].tolist() == pytest.approx([-0.5, 0.5], abs=1e-6)


@pytest.mark.parametrize("estimator", ["quantile", "sliced"])
def test_potentials_at_a_weight_tie_are_the_mean_of_the_one_sided_derivatives(estimator):
    # d = 1, policy x = (0, 2), baseline y = (1, 3) uniform, hinge h(z) = max(z, 0). With a = (a1, 1 - a1) the
    # cumulative weight a1 ties with b's 1/2 at w = 1. For a1 < 1/2 the segments are (0, a1]: h(1 - 0) = 1,
    # (a1, 1/2]: h(1 - 2) = 0, (1/2, 1]: h(3 - 2) = 1, so D = a1 + 1/2 (slope 1); for a1 > 1/2 they are (0, 1/2]: 1,
    # (1/2, a1]: h(3 - 0) = 3, (a1, 1]: 1, so D = 2 a1 - 1/2 (slope 2). The mean slope 3/2 times
    # da1/dw1 = w2 / (w1 + w2)^2 = 1/4 gives dD/dw = (3/8, -3/8); phi = n * dD/dw = (0.75, -0.75), D = 1.
    # (A weight jitter of 1e-3 around the tie is off by ~4e-4 here.)
    x = torch.tensor([[[0.0], [2.0]]], dtype=torch.float64)
    y = torch.tensor([[[1.0], [3.0]]], dtype=torch.float64)
    ones = torch.ones(1, 2, dtype=torch.bool)
    pot = dominance_potentials(x, ones, y, ones, spec(estimator, **({"seed": 0} if estimator == "sliced" else {})))
    assert pot.phi[0].tolist() == pytest.approx([0.75, -0.75], abs=1e-12)
    assert float(pot.violation) == pytest.approx(1.0, abs=1e-12)


def test_better_sample_gets_larger_advantage_every_estimator():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2)
    x[:, 0] += 3.0  # dominates the baseline
    x[:, 1] -= 3.0  # dominated by it
    y = torch.randn(3, 5, 2)
    xm, ym = torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)
    for est in ("exact", "quantile", "sliced", "sinkhorn"):
        for grouping in ("per_prompt", "pooled"):
            pot = dominance_potentials(x, xm, y, ym, spec(est, **({"seed": 0} if est == "sliced" else {})), grouping)
            adv = advantages_from_potentials(pot.phi, pot.valid)
            assert (adv[:, 0] > 0).all() and (adv[:, 1] < 0).all(), (est, grouping)
            assert adv.sum(-1).abs().max() < 1e-5  # centred per prompt


def test_masked_sample_leaves_the_cloud():
    torch.manual_seed(1)
    x, y = torch.randn(2, 3, 2), torch.randn(2, 4, 2)
    ones_x, ones_y = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)
    v = spec("sinkhorn", reg=0.1, tol=1e-8)
    ref = dominance_potentials(x[:, :2], ones_x[:, :2], y, ones_y, v)
    x_nan = x.clone()
    x_nan[:, 2] = float("nan")  # third sample masked (NaN reward): must not change the others' potentials
    pot = dominance_potentials(x_nan, ones_x, y, ones_y, v)
    assert pot.valid[:, 2].tolist() == [False, False]
    assert pot.phi[:, 2].tolist() == [0.0, 0.0]
    torch.testing.assert_close(pot.phi[:, :2], ref.phi, atol=1e-4, rtol=1e-4)


def test_prompt_without_baseline_is_skipped_not_nan():
    x, y = torch.randn(2, 3, 2), torch.randn(2, 4, 2)
    xm = torch.ones(2, 3, dtype=torch.bool)
    ym = torch.ones(2, 4, dtype=torch.bool)
    ym[1] = False
    pot = dominance_potentials(x, xm, y, ym, spec("quantile"))
    assert pot.active.tolist() == [True, False]
    assert pot.phi[1].tolist() == [0.0, 0.0, 0.0] and torch.isfinite(pot.phi).all()


def test_attribute_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="d = 3 attributes but the reward bank gives d = 2"):
        dominance_potentials(torch.zeros(1, 2, 2), torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2, 3),
                             torch.ones(1, 2, dtype=torch.bool), spec("quantile"))


def test_unknown_estimator_and_grouping():
    with pytest.raises(ValueError, match="unknown estimator 'sinkhorm'; did you mean 'sinkhorn'"):
        spec("sinkhorm")
    with pytest.raises(ValueError, match="unknown grouping"):
        dominance_potentials(torch.zeros(1, 2, 1), torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2, 1),
                             torch.ones(1, 2, dtype=torch.bool), spec("quantile"), "per_token")


# ------------------------------------------------------------------------------------- normalisation
def test_zscore_and_cdf_hand_values():
    base = torch.tensor([[[0.0, 5.0], [2.0, 5.0]]])  # attribute 0: mean 1, std 1; attribute 1 constant
    ym = torch.ones(1, 2, dtype=torch.bool)
    pol = torch.tensor([[[3.0, 6.0]]])
    xz, yz = normalise_pair(pol, base, ym, "zscore")
    assert xz.tolist() == [[[2.0, 1.0]]]  # constant attribute only centred
    assert yz.tolist() == [[[-1.0, 0.0], [1.0, 0.0]]]
    xc, yc = normalise_pair(pol, base, ym, "cdf")
    assert xc.tolist() == [[[1.0, 1.0]]]
    assert yc.tolist() == [[[0.25, 0.5], [0.75, 0.5]]]  # mid-ranks: (0 + 1) / 4, (1 + 2) / 4; ties (2 + 2) / 4
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise_pair(pol, base, ym, "minmax")


@pytest.mark.parametrize("estimator", ["quantile", "sliced", "sinkhorn"])
def test_eps_from_the_potentials_solve_equals_violation_ratio(estimator):
    import multidom

    torch.manual_seed(2)
    x, y = torch.randn(3, 6, 2) + 0.3, torch.randn(3, 5, 2)
    xm, ym = torch.ones(3, 6, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)
    xm[0, 1] = False
    options = {"sliced": {"seed": 4}, "sinkhorn": {"reg": 0.2, "tol": 1e-9}}.get(estimator, {})
    pot = dominance_potentials(x, xm, y, ym, spec(estimator, **options))
    ref = multidom.violation_ratio((x, xm.float()), (y, ym.float()), estimator=estimator, cost="hinge", **options)
    torch.testing.assert_close(pot.eps, ref, atol=1e-5, rtol=1e-5)
    no_tie = dominance_potentials(x, xm, y, ym, spec("quantile", cost="squared_hinge"))
    assert no_tie.eps is None  # no tie slope: the ratio needs a second solve (done only for logging)


