"""Offline multi-reward dominance: hand-derived values and gradients, the KL statistic, and a tiny training run in
which the policy's held-out candidate weights move towards the dominating candidates."""
from __future__ import annotations

import math

import pytest
import torch
from aot_tiny import tiny_model, tiny_tokenizer
from datasets import Dataset

from multidom.core.spec import DominanceSpec
from multidom.objectives.offline import candidate_weights, offline_dominance_loss
from multidom.trainers.offline import OfflineDominanceConfig, OfflineDominanceTrainer


def test_two_candidates_hinge_by_hand():
    # One prompt, K = 2 candidates with rewards 0 and 1 (d = 1); logratios (1, 0), beta = 1.
    # w = (s, 1 - s), s = sigmoid(1). Quantile coupling of P = {0: s, 1: 1 - s} and Q = {0: 1/2, 1: 1/2}:
    # on (1/2, s] P sits at 0 while Q sits at 1 -> hinge cost 1 on mass s - 1/2.
    logratios = torch.tensor([[1.0, 0.0]], requires_grad=True)
    rewards = torch.tensor([[[0.0], [1.0]]])
    loss, stats = offline_dominance_loss(logratios, rewards, beta=1.0,
                                         spec=DominanceSpec(estimator="quantile", cost="hinge", normalisation="none"))
    s = 1 / (1 + math.exp(-1))
    assert float(loss.detach()) == pytest.approx(s - 0.5, rel=1e-6)
    loss.backward()
    # d(s - 1/2)/d logratio_0 = s (1 - s) beta; the softmax makes the two gradients opposite.
    torch.testing.assert_close(logratios.grad, torch.tensor([[s * (1 - s), -s * (1 - s)]]))
    kl = s * math.log(2 * s) + (1 - s) * math.log(2 * (1 - s))
    assert float(stats["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(stats["policy_reward_mean"][0]) == pytest.approx(1 - s, rel=1e-6)


def test_candidate_weights_k2_is_dpo_sigmoid():
    lr = torch.tensor([[0.3, -0.4], [2.0, 1.0]])
    w = candidate_weights(lr, beta=0.5)
    torch.testing.assert_close(w[:, 0], torch.sigmoid(0.5 * (lr[:, 0] - lr[:, 1])))


@pytest.mark.parametrize("estimator, options", [("sinkhorn", {"reg": 0.1}), ("quantile", {}),
                                                ("sliced", {"n_directions": 16, "seed": 0}), ("exact", {})])
def test_gradient_at_the_reference_favours_dominating_candidates(estimator, options):
    # At the start (policy == reference) the clouds coincide, a kink of the unregularised violation in the
    # weights; every estimator must still tell which candidates to up-weight: the ones with higher rewards on both
    # attributes (a zero gradient here would leave training stuck at the start).
    logratios = torch.zeros(3, 3, requires_grad=True)
    rewards = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]] * 3)
    loss, stats = offline_dominance_loss(logratios, rewards, beta=1.0,
                                         spec=DominanceSpec(estimator=estimator, cost="logistic", options=options))
    assert float(stats["kl"]) == pytest.approx(0.0, abs=1e-7)
    if estimator != "sinkhorn":
        assert float(stats["eps"]) == pytest.approx(0.5, abs=1e-5)
    loss.backward()
    g = logratios.grad
    assert (g[:, 2] < 0).all() and (g[:, 0] > 0).all()  # raising the best candidate lowers the violation
    torch.testing.assert_close(g.sum(1), torch.zeros(3), atol=1e-6, rtol=0)  # softmax: gradients sum to 0


def _rows(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    prompts, comps, rewards = [], [], []
    for _ in range(n):
        idx = torch.randint(0, 26, (6,), generator=g).tolist()
        prompts.append("Q" + "".join(letters[j] for j in idx[:3]) + ":")
        noise = "".join(letters[j] for j in idx[3:])
        comps.append(["abab", noise, "ab" + noise[:1]])
        rewards.append([[1.0, 0.8], [0.0, 0.1], [0.5, 0.4]])  # "abab" dominates on both attributes
    return {"prompt": prompts, "completions": comps, "rewards": rewards}


def test_training_moves_weight_to_dominating_candidates(tmp_path):
    args = OfflineDominanceConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=2,
                                  max_steps=10, learning_rate=3e-2, beta=1.0, logging_steps=5, save_strategy="no",
                                  use_cpu=True, max_length=64, per_device_eval_batch_size=16,
                                  attribute_names=["helpful", "harmless"])
    tr = OfflineDominanceTrainer(tiny_model(seed=3, hidden=32), args, processing_class=tiny_tokenizer(),
                                 train_dataset=Dataset.from_dict(_rows(32, 0)),
                                 eval_dataset=Dataset.from_dict(_rows(16, 5)))
    before = tr.evaluate()
    tr.train()
    after = tr.evaluate()
    assert before["eval_dominance/sinkhorn/eps"] == pytest.approx(0.5, abs=1e-4)
    assert after["eval_dominance/sinkhorn/eps"] < 0.3
    assert after["eval_rewards/helpful/policy_mean"] > before["eval_rewards/helpful/policy_mean"] + 0.1
    assert after["eval_kl"] > 0.01
    logged = [r for r in tr.state.log_history if "dominance/sinkhorn/violation" in r]
    assert logged and "rewards/harmless/policy_mean" in logged[0] and "kl" in logged[0]
