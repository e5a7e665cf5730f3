"""Two real processes (``torchrun --nproc_per_node 2``, gloo) train exactly as one process on the concatenated
batch, end to end through ``multidom train``: the same per-step losses and logged statistics, and the same
weights after two optimizer steps (the second one taken away from the reference, so its loss depends on the
data). Every run asserts the world size it ran with (``training_args.bin``). AOT has its own test in
``test_cli_distributed.py``.

The online trainer samples its completions with HF ``generate``, whose random stream is shared by a batch's
rows; ``seeded_generate_train.py`` seeds every row by its prompt and index instead, so both runs see the same
completions and everything downstream of generation is compared. Plain SGD: Adam's first steps divide each
gradient by its own magnitude, which turns float rounding in near-zero gradients into differences of ``lr``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_tiny import save_tiny_lm
from run_tiny import assert_same_weights, moved, multidom_train, per_step, weights, world_size_of

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
PROMPTS = ["hello how are you", "what is the weather", "is it a nice day", "why are you sad",
           "how is the sun today", "are you happy", "what a great day", "is the rain bad"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("lm2") / "lm")


def _same(two: Path, one: Path, keys: tuple[str, ...], lm: Path) -> None:
    assert world_size_of(two / "final") == 2 and world_size_of(one / "final") == 1
    for key in keys:
        a, b = per_step(one, key), per_step(two, key)
        assert sorted(a) == sorted(b) == [1, 2], (key, a, b)
        for step in (1, 2):
            assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-6), (key, step)
    w1, w2 = weights(one / "final"), weights(two / "final")
    assert moved(w1, weights(lm)) > 1e-4  # the steps moved the weights
    assert_same_weights(w1, w2, atol=2e-6)


def test_online_two_processes_equal_one_after_two_steps(lm, tmp_path):
    config = {
        "trainer": "online", "model": {"name_or_path": str(lm)}, "data": {"prompts": PROMPTS, "chat": True},
        "rewards": [{"type": "length", "unit": "words"}, {"type": "regex", "pattern": "day|sun|good|nice",
                                                           "name": "sunny"}],
        "dominance": {"estimator": "quantile"},
        "training": {"use_cpu": True, "bf16": False, "max_steps": 2, "per_device_train_batch_size": 16, "num_generations": 2,
                     "baseline_samples": 2, "max_completion_length": 6, "optim": "sgd", "learning_rate": 0.5, "beta": 0.1,
                     "report_to": "none", "save_strategy": "no", "plot_steps": 0, "all_estimators_steps": 0,
                     "logging_steps": 1, "seed": 3},
    }
    script = str(HERE / "seeded_generate_train.py")
    multidom_train(1, config, tmp_path / "one", script=script)
    config["training"]["per_device_train_batch_size"] = 8
    multidom_train(2, config, tmp_path / "two", script=script)
    _same(tmp_path / "two", tmp_path / "one", ("loss", "kl", "rewards/length/mean", "rewards/sunny/mean",
                                               "rewards/length/baseline_mean", "dominance/quantile/eps"), lm)
    assert per_step(tmp_path / "one", "kl")[2] > 0  # step 2 starts away from the reference


def test_offline_two_processes_equal_one_after_two_steps(lm, tmp_path):
    grouped = [{"prompt": p, "response": ["good day", "bad rain", "nice sun"], "a": [2.0, 0.0, float(i % 3)],
                "b": [0.0, 1.0, float(i % 2)]} for i, p in enumerate(PROMPTS)]
    path = tmp_path / "grouped.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in grouped))
    config = {"trainer": "offline", "model": {"name_or_path": str(lm)},
              "data": {"train": str(path), "completions_column": "response", "reward_columns": ["a", "b"]},
              "dominance": {"estimator": "quantile"},
              "training": {"use_cpu": True, "max_steps": 2, "per_device_train_batch_size": 8,
                           "gradient_accumulation_steps": 1, "learning_rate": 0.5, "optim": "sgd",
                           "max_grad_norm": 0.0, "lr_scheduler_type": "constant", "report_to": "none",
                           "save_strategy": "no", "logging_steps": 1, "max_length": 32, "beta": 1.0, "seed": 0}}
    multidom_train(1, config, tmp_path / "one")
    config["training"]["per_device_train_batch_size"] = 4
    multidom_train(2, config, tmp_path / "two")
    _same(tmp_path / "two", tmp_path / "one", ("loss", "kl", "global_batch/examples", "rewards/a/policy_mean",
                                               "dominance/quantile/eps"), lm)
    assert per_step(tmp_path / "two", "global_batch/examples") == {1: 8.0, 2: 8.0}
