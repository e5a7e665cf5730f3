"""The CLI under ``torchrun --nproc_per_node 2`` (two gloo processes; ``accelerate launch --cpu`` starts only one
on this machine, DESIGN.md §8) equals one process: the online trainer's reference baseline is sampled by both
ranks, half the prompts each, and its cache equals the one-process cache; AOT and offline reach the same loss
and the same weights as one process on the concatenated batch. Every run asserts the world size it ran with.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lm_tiny import save_tiny_lm
from run_tiny import multidom_train

pytestmark = pytest.mark.slow
PROMPTS = ["hello how are you", "what is the weather", "is it a nice day", "why are you sad",
           "how is the sun today", "are you happy", "what a great day", "is the rain bad"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    path = save_tiny_lm(tmp_path_factory.mktemp("lm") / "lm")
    (path.parent / "lm_as_final" / "final").mkdir(parents=True)
    (path.parent / "lm_as_final" / "final" / "model.safetensors").symlink_to(path / "model.safetensors")
    return path


def _metric(out: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def test_online_baseline_sampled_by_both_ranks_equals_one_process(lm, tmp_path):
    config = {
        "trainer": "online", "model": {"name_or_path": str(lm)},
        "data": {"prompts": PROMPTS, "chat": True},
        "rewards": [{"type": "length", "unit": "words"}, {"type": "regex", "pattern": "day|sun", "name": "sunny"}],
        "dominance": {"estimator": "quantile"},
        "training": {"use_cpu": True, "max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2,
                     "baseline_samples": 3, "max_completion_length": 6, "temperature": 0.9, "top_k": 20,
                     "repetition_penalty": 1.1, "report_to": "none", "save_strategy": "no", "plot_steps": 0,
                     "all_estimators_steps": 0, "logging_steps": 1, "seed": 3},
    }
    stdout = multidom_train(2, config, tmp_path / "two")
    for rank in (0, 1):  # both ranks sampled their half of the 8 prompts
        assert f"baseline cloud: rank {rank}/2 samples 4 of 8 prompts" in stdout, stdout[-2000:]
    multidom_train(1, config, tmp_path / "one")
    two = json.loads((tmp_path / "two" / "baseline_cache.json").read_text())
    one = json.loads((tmp_path / "one" / "baseline_cache.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["fingerprint"] == one["fingerprint"]
    assert sorted(two["rows"]) == sorted(one["rows"]) and len(one["rows"]) == len(PROMPTS)
    for k, pts in one["rows"].items():
        assert len(pts) == 3
        torch.testing.assert_close(torch.tensor(two["rows"][k]), torch.tensor(pts), rtol=0, atol=1e-6, msg=k)
    lengths = {p[0] for pts in one["rows"].values() for p in pts}
    assert len(lengths) > 2  # real samples of different lengths, not a constant


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


def _same_run(two: Path, one: Path, examples: int, lm: Path) -> None:
    assert _metric(two, "global_batch/examples") == _metric(one, "global_batch/examples") == [float(examples)]
    loss2, loss1 = _metric(two, "loss"), _metric(one, "loss")
    assert loss2 and loss2 == pytest.approx(loss1, rel=1e-5)
    w2, w1, w0 = _final_weights(two), _final_weights(one), _final_weights(lm.parent / "lm_as_final")
    for name, p in w1.items():
        torch.testing.assert_close(w2[name], p, rtol=1e-5, atol=1e-6, msg=name)
    assert max(float((w1[n] - w0[n]).abs().max()) for n in w1) > 1e-4  # the step moved the weights


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _training(per_device: int) -> dict:
    return {"use_cpu": True, "max_steps": 1, "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": 1, "learning_rate": 0.5, "optim": "sgd", "max_grad_norm": 0.0,
            "lr_scheduler_type": "constant", "report_to": "none", "save_strategy": "no", "logging_steps": 1,
            "max_length": 32, "seed": 0}


def test_aot_and_offline_on_two_ranks_equal_one_process(lm, tmp_path):
    rows = [{"chosen": [{"role": "user", "content": p}, {"role": "assistant", "content": "good great day"}],
             "rejected": [{"role": "user", "content": p}, {"role": "assistant", "content": "bad awful rain"}]}
            for p in PROMPTS]  # TRL's conversational preference rows without a prompt column
    aot = {"trainer": "aot", "model": {"name_or_path": str(lm)},
           "data": {"train": _jsonl(tmp_path / "pref.jsonl", rows)},
           "training": {**_training(4), "pairing": "paired", "beta": 1.0}}
    multidom_train(1, aot, tmp_path / "aot_one")
    aot["training"]["per_device_train_batch_size"] = 2
    multidom_train(2, aot, tmp_path / "aot_two")
    _same_run(tmp_path / "aot_two", tmp_path / "aot_one", 4, lm)

    grouped = [{"prompt": p, "response": ["good day", "bad rain", "nice sun"], "a": [2.0, 0.0, 1.0],
                "b": [0.0, 1.0, float(i % 2)]} for i, p in enumerate(PROMPTS)]
    off = {"trainer": "offline", "model": {"name_or_path": str(lm)},
           "data": {"train": _jsonl(tmp_path / "grouped.jsonl", grouped), "completions_column": "response",
                    "reward_columns": ["a", "b"]},
           "dominance": {"estimator": "quantile"},
           "training": {**_training(4), "beta": 1.0}}
    multidom_train(1, off, tmp_path / "off_one")
    off["training"]["per_device_train_batch_size"] = 2
    multidom_train(2, off, tmp_path / "off_two")
    _same_run(tmp_path / "off_two", tmp_path / "off_one", 4, lm)
