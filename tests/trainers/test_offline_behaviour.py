"""Behaviour of the offline multi-reward trainer, not its plumbing (issue 15).

* the reward columns reach each row's candidates in order (hand values: column ``a``'s k-th value is candidate
  k's first attribute);
* the logged ``rewards/<attribute>/policy_mean`` is the policy-weighted mean of the raw rewards: at step 1
  (policy == reference, uniform weights) the plain mean written by hand; at step 2 the mean under the weights
  ``softmax_k(beta * logratio)`` recomputed here from the step-1 checkpoint, which depends on which reward row
  goes with which candidates;
* a run resumed from its step-2 checkpoint executes only steps 3 and 4 and ends with the uninterrupted run's
  per-step losses, metrics and weights.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from datasets import Dataset
from lm_tiny import PROMPTS, load, save_tiny_lm
from run_tiny import StepRecorder, assert_same_weights, moved, per_step, weights

from multidom.app.recipes import run_training
from multidom.lm.logprobs import add_log_prob_head, sequence_logps
from multidom.lm.tokenize import SequenceCollator
from multidom.trainers.offline import prepare_offline_dataset
from multidom.trainers.tracking import JsonlMetrics

pytestmark = pytest.mark.slow
MORE = PROMPTS + ["how is the sun today", "are you happy", "what a great day", "is the rain bad"]
RESPONSES = ["good great day", "bad rain", "nice sun", "awful sad rain today"]
#: reward columns by hand, one value per candidate; every row different, so a row shift changes the numbers
A = [[2.0, 0.0, 1.0, -1.0], [0.0, 3.0, 1.0, 0.5], [1.0, 1.0, 4.0, 0.0], [-2.0, 0.0, 1.0, 2.5],
     [0.5, 2.0, -1.0, 1.0], [3.0, 1.0, 0.0, 0.0], [0.0, -1.0, 2.0, 1.0], [1.5, 0.0, 0.5, 3.0]]
B = [[0.0, 1.0, 1.0, 2.0], [1.0, 0.0, 2.0, -1.0], [0.0, 2.0, 0.0, 1.0], [1.0, 1.0, -1.0, 0.0],
     [2.0, 0.0, 1.0, 1.0], [0.0, 0.0, 3.0, 1.0], [1.0, 2.0, 0.0, -2.0], [0.5, 1.0, 1.0, 0.0]]
BETA = 1.0


def _rows() -> list[dict]:
    # each prompt gets its candidates in a different order: a row's rewards only fit its own candidates
    return [{"prompt": p, "response": RESPONSES[i % 4:] + RESPONSES[:i % 4], "a": A[i], "b": B[i]}
            for i, p in enumerate(MORE)]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("offline_behaviour") / "lm")


def _config(lm, data: str, **training) -> dict:
    return {"model": str(lm),
            "data": {"train": data, "completions_column": "response", "reward_columns": ["a", "b"]},
            "dominance": {"estimator": "quantile"},
            "training": {"use_cpu": True, "max_steps": 4, "per_device_train_batch_size": 8,
                         "gradient_accumulation_steps": 1, "learning_rate": 0.3, "optim": "sgd",
                         "lr_scheduler_type": "constant", "report_to": "none", "save_steps": 1, "logging_steps": 1,
                         "max_length": 32, "beta": BETA, "seed": 0, **training}}


def _write(tmp_path) -> str:
    path = tmp_path / "grouped.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return str(path)


def test_reward_columns_stay_with_their_row_and_candidate(lm):
    _, tok = load(lm)
    ds = prepare_offline_dataset(Dataset.from_list(_rows()), tok, max_length=32, completions_column="response",
                                 reward_columns=["a", "b"])
    assert ds[1]["rewards"] == [[0.0, 1.0], [3.0, 0.0], [1.0, 2.0], [0.5, -1.0]]  # (a_k, b_k) of row 1, by hand
    assert ds[7]["rewards"][3] == [3.0, 0.0]
    ids = ds["completion_ids"]
    # row 1's candidates are RESPONSES rotated by one: its first is row 0's second ("bad rain"), and so on
    assert [ids[1][k] for k in range(4)] == [ids[0][(k + 1) % 4] for k in range(4)]
    assert ids[0][0] != ids[0][1]


def _expected_policy_mean(policy, ref, tok) -> torch.Tensor:
    """``mean_i sum_k softmax_k(beta * logratio_ik) r_ik``, recomputed from the models, row by row."""
    ds = prepare_offline_dataset(Dataset.from_list(_rows()), tok, max_length=32, completions_column="response",
                                 reward_columns=["a", "b"])
    collate = SequenceCollator(tok.pad_token_id)
    batch = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        for m in (policy, ref):
            add_log_prob_head(m)
            m.eval()
        lr = sequence_logps(policy, batch, 4).double() - sequence_logps(ref, batch, 4).double()
    w = torch.softmax(BETA * lr, dim=-1)
    rewards = torch.tensor([[[a, b] for a, b in zip(A[i], B[i])] for i in range(len(A))], dtype=torch.float64)
    return (w[..., None] * rewards).sum(1).mean(0), w


def test_logged_policy_reward_mean_follows_the_weighted_rows(lm, tmp_path):
    out = tmp_path / "run"
    run_training("offline", _config(lm, _write(tmp_path), max_steps=2), output_dir=str(out))
    a, b = per_step(out, "rewards/a/policy_mean"), per_step(out, "rewards/b/policy_mean")
    # step 1: the policy is the reference, every weight 1/4: the plain means of A and B
    assert a[1] == pytest.approx(sum(map(sum, A)) / 32, abs=1e-6)
    assert b[1] == pytest.approx(sum(map(sum, B)) / 32, abs=1e-6)
    # step 2: weights from the step-1 model, which differ from row to row
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(out / "checkpoint-1")
    ref, tok = load(lm)
    want, w = _expected_policy_mean(policy, ref, tok)
    assert float((w - 0.25).abs().max()) > 1e-3  # the weights left uniform: the value depends on the data
    assert a[2] == pytest.approx(float(want[0]), abs=1e-5)
    assert b[2] == pytest.approx(float(want[1]), abs=1e-5)


def test_resumed_run_equals_uninterrupted(lm, tmp_path, monkeypatch):
    config = _config(lm, _write(tmp_path), per_device_train_batch_size=4, save_steps=2)
    full = tmp_path / "full"
    run_training("offline", config, output_dir=str(full))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    steps = StepRecorder()
    monkeypatch.setattr(JsonlMetrics, "on_step_end", steps, raising=False)
    summary = run_training("offline", config, output_dir=str(resumed), resume=True)
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 4
    assert steps.steps == [3, 4]
    for key in ("loss", "dominance/quantile/eps", "kl", "rewards/a/policy_mean", "rewards/b/policy_mean"):
        want, got = per_step(full, key), per_step(resumed, key)
        assert set(got) == {3, 4}, (key, got)
        for step in (3, 4):
            assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-7), (key, step)
    assert per_step(full, "kl")[4] > 0
    a, b = weights(full / "final"), weights(resumed / "final")
    assert moved(a, weights(lm)) > 1e-4
    assert_same_weights(a, b, atol=1e-6)
