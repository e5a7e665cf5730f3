"""Behaviour of the online dominance trainer, not its plumbing (issue 15).

* a run resumed from its step-1 checkpoint executes only steps 2 and 3 and ends with the uninterrupted run's
  per-step losses, logged statistics and weights (a runner that ignores ``--resume`` re-runs step 1);
* the logged cloud statistics are those of the clouds: the policy's from the values the reward models returned
  in that step, the baseline's from a hand-written baseline column (swapping the two fails);
* which completion gets which reward: the aggregator's rewards, for completions handed over in a shuffled order
  with per-prompt baselines, equal the objective's potentials on the clouds built by hand, and follow the order
  of the hand values within each prompt;
* the evaluation path: ``eval_prompts`` / ``num_generations_eval`` group the evaluation completions by
  ``num_generations_eval`` and log the evaluation clouds' statistics.
"""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from datasets import Dataset
from lm_tiny import PROMPTS, load, save_tiny_lm
from run_tiny import StepRecorder, assert_same_weights, metric_rows, moved, per_step, weights

from multidom.app.recipes import run_training
from multidom.core.spec import DominanceSpec
from multidom.objectives.online import dominance_potentials
from multidom.trainers.online import DominanceReward, OnlineDominanceConfig, OnlineDominanceTrainer
from multidom.trainers.online_baseline import Scorer
from multidom.trainers.tracking import JsonlMetrics
from reward_models import create

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("online_behaviour") / "lm")


# ------------------------------------------------------------------------------- resume == uninterrupted
def _config(lm, **training) -> dict:
    return {
        "model": str(lm), "data": {"prompts": PROMPTS},
        "rewards": ["length", {"type": "regex", "pattern": "good|great|nice|happy", "name": "positive"}],
        "dominance": {"estimator": "quantile"},
        "training": {"max_steps": 3, "per_device_train_batch_size": 4, "num_generations": 2,
                     "max_completion_length": 6, "baseline_samples": 2, "save_steps": 1, "logging_steps": 1,
                     "report_to": "none", "all_estimators_steps": 0, "plot_steps": 0, "learning_rate": 0.05,
                     "beta": 0.1, "seed": 0, "bf16": False, "use_cpu": True, **training},
    }


def test_resumed_run_equals_uninterrupted(lm, tmp_path, monkeypatch):
    config = _config(lm)
    full = tmp_path / "full"
    run_training("online", config, output_dir=str(full))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    steps = StepRecorder()
    monkeypatch.setattr(JsonlMetrics, "on_step_end", steps, raising=False)
    summary = run_training("online", config, output_dir=str(resumed), resume=True)
    assert summary["resumed_from"].endswith("checkpoint-1")
    assert steps.steps == [2, 3]  # the checkpoint's step was not run again
    for key in ("loss", "kl", "rewards/length/mean", "rewards/positive/mean", "dominance/quantile/eps"):
        want, got = per_step(full, key), per_step(resumed, key)
        assert set(got) == {2, 3}, (key, got)
        for step in (2, 3):  # past step 1, where the policy still equals the reference
            assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-7), (key, step)
    assert per_step(full, "kl")[3] > 0  # the policy has left the reference: these values depend on the data
    a, b = weights(full / "final"), weights(resumed / "final")
    assert moved(a, weights(lm)) > 1e-4
    assert_same_weights(a, b, atol=1e-6)


# ------------------------------------------------------------------------------- logged values
class _Recording:
    """A reward model that scores each completion and records what it returned, call by call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, prompts, completions, completion_ids=None, **_):
        values = [float(self.fn(c, ids)) for c, ids in zip(completions, completion_ids)]
        self.calls.append({"prompts": list(prompts), "values": values})
        return values


def _text(c) -> str:
    return c if isinstance(c, str) else " ".join(m["content"] for m in c)


def _bank():
    tokens = _Recording(lambda c, ids: len(ids))
    good = _Recording(lambda c, ids: sum(w in ("good", "great", "nice", "happy") for w in _text(c).split()))
    bank = [create({"type": "callable", "fn": tokens, "name": "tokens"}),
            create({"type": "callable", "fn": good, "name": "good"})]
    return bank, tokens, good


#: one baseline cloud per prompt, hand-written: 6 points in all, (0,1) (2,3) (4,5) (6,7) (8,9) (10,11)
BASELINES = [[[0.0, 1.0]], [[2.0, 3.0], [4.0, 5.0]], [[6.0, 7.0]], [[8.0, 9.0], [10.0, 11.0]]]


def _stats(values) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "q10": float(np.quantile(v, 0.1)), "q50": float(np.quantile(v, 0.5)),
            "q90": float(np.quantile(v, 0.9))}


def _trainer(lm, out, bank, **kw):
    model, tok = load(lm)
    args = OnlineDominanceConfig(
        output_dir=str(out), max_steps=2, per_device_train_batch_size=8, num_generations=2, max_completion_length=6,
        learning_rate=0.05, beta=0.1, baseline_source="column", dominance={"estimator": "quantile"},
        report_to="none", logging_steps=1, save_strategy="no", plot_steps=0, all_estimators_steps=0, seed=0,
        use_cpu=True, **kw)
    train = Dataset.from_dict({"prompt": PROMPTS, "baseline_rewards": BASELINES})
    return args, model, tok, train


def test_logged_cloud_statistics_are_the_policy_and_baseline_clouds(lm, tmp_path):
    bank, tokens, good = _bank()
    args, model, tok, train = _trainer(lm, tmp_path / "run", bank)
    trainer = OnlineDominanceTrainer(model, args, train, bank, processing_class=tok)
    trainer.train()
    rows = {r["step"]: r for r in metric_rows(tmp_path / "run") if "rewards/tokens/mean" in r}
    assert sorted(rows) == [1, 2] and len(tokens.calls) == 2
    base = {"tokens": _stats([0, 2, 4, 6, 8, 10]), "good": _stats([1, 3, 5, 7, 9, 11])}
    assert base["tokens"]["mean"] == 5.0 and base["tokens"]["q10"] == pytest.approx(1.0)  # numpy, by hand
    for step, row in rows.items():
        for name, rec in (("tokens", tokens), ("good", good)):
            policy = _stats(rec.calls[step - 1]["values"])
            for stat in ("mean", "q10", "q50", "q90"):
                assert row[f"rewards/{name}/{stat}"] == pytest.approx(policy[stat], abs=1e-6), (step, name, stat)
                assert row[f"rewards/{name}/baseline_{stat}"] == pytest.approx(base[name][stat], abs=1e-6)
    # the two clouds differ, so swapping policy and baseline statistics cannot pass
    assert rows[1]["rewards/tokens/mean"] != pytest.approx(5.0)
    assert rows[2]["kl"] > 0  # step 2 starts away from the reference


def test_evaluation_groups_by_num_generations_eval_and_logs_its_clouds(lm, tmp_path):
    bank, tokens, _ = _bank()
    args, model, tok, train = _trainer(lm, tmp_path / "eval", bank, num_generations_eval=3,
                                       per_device_eval_batch_size=6)
    evals = Dataset.from_dict({"prompt": PROMPTS[:2], "baseline_rewards": BASELINES[:2]})
    trainer = OnlineDominanceTrainer(model, args, train, bank, processing_class=tok, eval_dataset=evals)
    metrics = trainer.evaluate()
    call = tokens.calls[-1]
    # 2 prompts x 3 generations, each prompt's completions consecutive
    assert len(call["prompts"]) == 6 and [call["prompts"][i] == call["prompts"][i - i % 3] for i in range(6)] == [True] * 6
    assert trainer.dominance.last["policy"].shape == (2, 3, 2)
    assert metrics["eval_rewards/tokens/mean"] == pytest.approx(float(np.mean(call["values"])), abs=1e-6)
    assert metrics["eval_rewards/tokens/baseline_mean"] == pytest.approx(2.0)  # (0 + 2 + 4) / 3
    assert metrics["eval_rewards/good/baseline_mean"] == pytest.approx(3.0)
    # the config key of the run recipe reaches the same path
    run = _config(lm, max_steps=1, save_steps=10, eval_strategy="steps", eval_steps=1, num_generations_eval=3,
                  per_device_eval_batch_size=6)
    run["data"]["eval_prompts"] = PROMPTS[:2]
    run_training("online", run, output_dir=str(tmp_path / "recipe"))
    ev = [r for r in metric_rows(tmp_path / "recipe") if "eval_rewards/length/mean" in r]
    assert ev and all(math.isfinite(r["eval_rewards/length/mean"]) for r in ev)


# ------------------------------------------------------------------------------- which sample gets which reward
def _table_scorer(table: dict[str, list[float]]) -> Scorer:
    return Scorer(lambda p, c, **_: [table[x] for x in c], ["r0", "r1"])


def test_each_completion_gets_the_reward_of_its_own_vector_against_its_own_prompts_baseline(tmp_path):
    """Prompt a's baseline is low, prompt b's high; within each prompt one completion dominates the other. The
    completions arrive in the order TRL hands them (groups consecutive), but the table is keyed by name, so a
    misaligned reshape, baseline row or local slice gives other numbers."""
    table = {"a_hi": [3.0, 2.0], "a_lo": [0.0, -1.0], "b_hi": [1.0, 1.5], "b_lo": [-2.0, 0.5]}
    base = {"a": [[0.5, 0.0], [1.0, 1.0]], "b": [[2.0, 2.0], [3.0, 2.5]]}
    prompts, completions = ["a", "a", "b", "b"], ["a_lo", "a_hi", "b_hi", "b_lo"]
    spec = DominanceSpec(estimator="quantile", cost="hinge", normalisation="none")
    cfg = OnlineDominanceConfig(output_dir=str(tmp_path), report_to="none", num_generations=2, use_cpu=True,
                                per_device_train_batch_size=4, dominance=spec, plot_steps=0, all_estimators_steps=0)
    agg = DominanceReward(_table_scorer(table), cfg)
    out = agg(prompts, completions, completion_ids=[[1]] * 4, baseline_rewards=[base[p] for p in prompts])
    # the oracle: the objective on the clouds built by hand, prompt by prompt
    x = torch.tensor([[table["a_lo"], table["a_hi"]], [table["b_hi"], table["b_lo"]]])
    y = torch.tensor([base["a"], base["b"]])
    pot = dominance_potentials(x, torch.ones(2, 2, dtype=torch.bool), y, torch.ones(2, 2, dtype=torch.bool), spec,
                               "per_prompt")
    torch.testing.assert_close(torch.tensor(out), -pot.phi.reshape(-1), rtol=0, atol=1e-6)
    # hand facts: the dominating completion of each prompt gets the larger reward; a_hi dominates a's baseline
    # (no violation) while b_hi does not dominate b's, so their rewards differ
    assert out[1] > out[0] and out[2] > out[3]
    # by hand (hinge, sorted coupling per attribute, weights 1/2 each): a_lo=(0,-1) is beaten by both baseline
    # points; its violation potential exceeds a_hi's, which beats both (zero violation)
    assert out[1] - out[0] > 0.5
    swapped = agg(prompts[::-1], completions[::-1], completion_ids=[[1]] * 4,
                  baseline_rewards=[base[p] for p in prompts[::-1]])
    assert swapped == pytest.approx(out[::-1], abs=1e-6)  # follows the samples, not the positions
