"""The objectives' contracts that the hand-value tests leave open (found by mutation testing, issue 15):
error messages users read, defaults, per-call estimator options, masks and padding, and statistics over more
than one prompt (a reduction over the wrong axis is invisible with B = 1)."""
from __future__ import annotations

import math

import pytest
import torch

from multidom.core.spec import DominanceSpec
from multidom.objectives.aot import aot_paired_loss, aot_unpaired_loss, soft_sort
from multidom.objectives.offline import candidate_weights, offline_dominance_loss
from multidom.objectives.online import advantages_from_potentials, dominance_potentials

U, V = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.0, -0.5])


# ----------------------------------------------------------------------------------------------- AOT
def test_aot_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^soft sort temperature must be > 0, got 0$"):
        soft_sort(U, 0)
    empty = torch.zeros(0)
    with pytest.raises(ValueError, match=r"^chosen_logratios is empty: the batch holds no chosen sequences; use a "
                                         r"larger batch or balance the desirable/undesirable examples$"):
        aot_unpaired_loss(empty, V)
    with pytest.raises(ValueError, match=r"^policy_margins must be a 1-D tensor"):
        aot_paired_loss(U[:, None], V)
    with pytest.raises(ValueError, match=r"^reference_margins is empty: the batch holds no reference sequences"):
        aot_paired_loss(U, empty)
    with pytest.raises(ValueError, match=r"^paired AOT needs as many policy as reference margins, got 3 and 2$"):
        aot_paired_loss(U, V[:2])
    with pytest.raises(ValueError, match=r"beta \(the DPO temperature\) must be a finite number > 0, got inf"):
        aot_unpaired_loss(U, V, beta=float("inf"))
    spec = DominanceSpec(estimator="quantile", cost="logistic", normalisation="zscore")
    with pytest.raises(ValueError, match=r"^AOT compares implicit rewards beta \* logratio: dominance.normalisation "
                                         r"must be 'none'$"):
        aot_unpaired_loss(U, V, spec=spec)


def test_aot_default_beta_is_the_papers():
    assert float(aot_unpaired_loss(U, V)) == pytest.approx(float(aot_unpaired_loss(U, V, beta=0.01)), abs=0)
    assert float(aot_paired_loss(U, V)) == pytest.approx(float(aot_paired_loss(U, V, beta=0.01)), abs=0)
    assert float(aot_unpaired_loss(U, V)) != pytest.approx(float(aot_unpaired_loss(U, V, beta=1.0)))


@pytest.mark.parametrize("cost, gain, margin, ls", [("hinge", 1.0, 0.7, 0.0), ("logistic", 3.0, 0.0, 0.2),
                                                    ("squared_hinge", 1.0, 0.5, 0.3)])
def test_soft_sort_at_small_temperature_is_the_exact_loss(cost, gain, margin, ls):
    """The soft-sort path uses the spec's cost with its gain and margin, and label smoothing, as the exact one."""
    spec = DominanceSpec(estimator="quantile", cost=cost, cost_gain=gain, margin=margin, normalisation="none")
    for loss in (aot_unpaired_loss, aot_paired_loss):
        exact = loss(U, V, beta=1.0, spec=spec, label_smoothing=ls)
        soft = loss(U, V, beta=1.0, spec=spec, label_smoothing=ls, soft_sort_tau=1e-4)
        assert float(soft) == pytest.approx(float(exact), abs=1e-4)
        assert float(loss(U, V, beta=1.0, spec=spec, label_smoothing=ls, soft_sort_tau=5.0)) != pytest.approx(
            float(exact), abs=1e-4)  # and the temperature is used


# ----------------------------------------------------------------------------------------------- online
def _spec(estimator="quantile", **kw) -> DominanceSpec:
    return DominanceSpec(estimator=estimator, cost="hinge", normalisation=kw.pop("normalisation", "none"), **kw)


def _clouds():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], [[0.5, 0.5], [2.0, 1.0], [0.0, 0.0]]])
    y = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    return x, torch.ones(2, 3, dtype=torch.bool), y, torch.ones(2, 2, dtype=torch.bool)


def test_online_errors_name_the_problem():
    x, xm, y, ym = _clouds()
    with pytest.raises(ValueError, match=r"^unknown grouping 'joint'; valid: per_prompt, pooled$"):
        dominance_potentials(x, xm, y, ym, _spec(), "joint")
    with pytest.raises(ValueError, match=r"^policy and baseline must be \(B, G, d\) and \(B, M, d\); got \(2, 3\), "
                                         r"\(2, 2, 2\)$"):
        dominance_potentials(x[..., 0], xm, y, ym, _spec())
    with pytest.raises(ValueError, match=r"got \(2, 3, 2\), \(2, 2\)$"):
        dominance_potentials(x, xm, y[..., 0], ym, _spec())
    with pytest.raises(ValueError, match=r"^the baseline has d = 1 attributes but the reward bank gives d = 2$"):
        dominance_potentials(x, xm, y[..., :1], ym, _spec())


def test_each_prompts_potentials_do_not_depend_on_the_other_prompts():
    """phi = n dD/dw with n the prompt's own number of valid samples: prompt 0 alone gives the same numbers."""
    x, xm, y, ym = _clouds()
    xm[1, 2] = False  # prompt 1 has 2 valid samples, prompt 0 has 3
    both = dominance_potentials(x, xm, y, ym, _spec())
    for b in (0, 1):
        alone = dominance_potentials(x[b:b + 1], xm[b:b + 1], y[b:b + 1], ym[b:b + 1], _spec())
        torch.testing.assert_close(both.phi[b], alone.phi[0])
    assert both.phi[1, 2] == 0 and not both.valid[1, 2]


def test_padding_and_non_finite_baseline_points_leave_the_cloud():
    """A padded (masked) baseline point and a point with one NaN coordinate change nothing, even z-scored."""
    x, xm, y, ym = _clouds()
    spec = _spec(normalisation="zscore")
    want = dominance_potentials(x, xm, y, ym, spec)
    pad = torch.tensor([[[100.0, -50.0], [math.nan, 3.0]]] * 2)
    padded = dominance_potentials(x, xm, torch.cat([y, pad], 1),
                                  torch.cat([ym, torch.tensor([[False, True]] * 2)], 1), spec)
    torch.testing.assert_close(padded.phi, want.phi)
    torch.testing.assert_close(padded.violation, want.violation)


def test_prompt_with_every_sample_masked_is_skipped_per_prompt_and_pooled():
    x, xm, y, ym = _clouds()
    xm[0] = False
    for grouping in ("per_prompt", "pooled"):
        pot = dominance_potentials(x, xm, y, ym, _spec(), grouping)
        assert pot.valid[0].sum() == 0 and (pot.phi[0] == 0).all()
        assert pot.valid[1].all() and (pot.phi[1] != 0).any()
    assert dominance_potentials(x, xm, y, ym, _spec()).active.tolist() == [False, True]


def test_nothing_active_gives_zero_potentials():
    x, xm, y, _ = _clouds()
    for grouping in ("per_prompt", "pooled"):
        pot = dominance_potentials(x, xm, y, torch.zeros(2, 2, dtype=torch.bool), _spec(), grouping)
        assert pot.phi.shape == (2, 3) and (pot.phi == 0).all()
        assert pot.valid.shape == (2, 3) and not pot.valid.any()
        assert pot.active.shape == (2,) and not pot.active.any()
        assert pot.violation.shape == () and float(pot.violation) == 0.0


def test_pooled_with_an_odd_number_of_samples():
    x, xm, y, ym = _clouds()
    x3, xm3 = torch.cat([x, x[:1]])[:, :1], torch.ones(3, 1, dtype=torch.bool)  # B = 3 prompts, G = 1
    y3, ym3 = torch.cat([y, y[:1]]), torch.ones(3, 2, dtype=torch.bool)
    pot = dominance_potentials(x3, xm3, y3, ym3, _spec(), "pooled")
    assert pot.phi.shape == (3, 1) and pot.valid.all()


def test_per_call_options_reach_the_solve():
    """The sliced estimator's per-step ``seed`` (an override) acts as the same option in the spec would."""
    x, xm, y, ym = _clouds()
    over = dominance_potentials(x, xm, y, ym, _spec("sliced"), seed=7)
    fixed = dominance_potentials(x, xm, y, ym, _spec("sliced", options={"seed": 7}))
    other = dominance_potentials(x, xm, y, ym, _spec("sliced", options={"seed": 8}))
    torch.testing.assert_close(over.phi, fixed.phi)
    torch.testing.assert_close(over.eps, fixed.eps)
    assert not torch.allclose(over.phi, other.phi)


def test_non_finite_potentials_are_an_error(monkeypatch):
    x, xm, y, ym = _clouds()
    monkeypatch.setattr(DominanceSpec, "violation", lambda self, p, n, **k: (p[1] * math.nan).sum(-1))
    with pytest.raises(FloatingPointError, match=r"^the estimator returned non-finite potentials; check the "
                                                 r"estimator parameters \(e.g. a too-small sinkhorn reg\) and the "
                                                 r"reward scale$"):
        dominance_potentials(x, xm, y, ym, _spec())


def test_advantages_by_hand_with_masks():
    phi = torch.tensor([[1.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, False], [True, False, False]])
    adv = advantages_from_potentials(phi, valid)
    # prompt 0: mean of (1, 3) = 2 -> A = (1, -1, 0); prompt 1: one valid sample, A = 0
    assert adv.tolist() == [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]


# ----------------------------------------------------------------------------------------------- offline
LR = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]])
R = torch.tensor([[[1.0, 0.0], [3.0, 2.0]], [[0.0, 4.0], [2.0, 2.0]]])


def test_candidate_weights_refuse_bad_beta():
    for beta in (0, 0.0, -1.0, True, "1"):
        with pytest.raises(ValueError, match=r"^beta must be a number > 0, got "):
            candidate_weights(LR, beta)


def test_offline_statistics_by_hand_over_two_prompts():
    _, stats = offline_dominance_loss(LR, R, beta=1.0, spec=_spec())
    # weights: prompt 0 softmax(0, log 3) = (1/4, 3/4); prompt 1 softmax(log 2, 0) = (2/3, 1/3)
    # policy reward mean: prompt 0 (1/4 (1,0) + 3/4 (3,2)) = (2.5, 1.5); prompt 1 (2/3 (0,4) + 1/3 (2,2)) = (2/3, 10/3)
    torch.testing.assert_close(stats["policy_reward_mean"], torch.tensor([(2.5 + 2 / 3) / 2, (1.5 + 10 / 3) / 2]))
    kl0 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    kl1 = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
    assert float(stats["kl"]) == pytest.approx((kl0 + kl1) / 2, abs=1e-6)


def test_offline_default_beta_and_per_call_options():
    loss, _ = offline_dominance_loss(LR, R)
    assert float(loss) == pytest.approx(float(offline_dominance_loss(LR, R, beta=1.0)[0]), abs=0)
    assert float(loss) != pytest.approx(float(offline_dominance_loss(LR, R, beta=3.0)[0]), abs=1e-6)
    sink = DominanceSpec(estimator="sinkhorn", cost="logistic", normalisation="none")
    a, sa = offline_dominance_loss(LR, R, spec=sink, reg=0.5)
    b, sb = offline_dominance_loss(LR, R, spec=sink.replace(options={"reg": 0.5}))
    c, _ = offline_dominance_loss(LR, R, spec=sink, reg=0.05)
    assert float(a) == pytest.approx(float(b), abs=1e-7) and float(sa["eps"]) == pytest.approx(float(sb["eps"]), abs=1e-7)
    assert float(a) != pytest.approx(float(c), abs=1e-7)


def test_offline_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^logratios must have shape \(B, K\), got \(4,\)$"):
        offline_dominance_loss(LR.reshape(-1), R)
    with pytest.raises(ValueError, match=r"^offline dominance needs K >= 2 candidates per prompt, got K = 1$"):
        offline_dominance_loss(LR[:, :1], R[:, :1])
    with pytest.raises(ValueError, match=r"^rewards must have shape \(B, K, d\) = \(2, 2, d\), got \(2, 2\)$"):
        offline_dominance_loss(LR, R[..., 0])
    bad = R.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"^rewards contain NaN or inf; drop or impute those candidates first$"):
        offline_dominance_loss(LR, bad)
