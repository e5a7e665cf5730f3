"""The quickstart resumed from its alignment checkpoint equals the uninterrupted quickstart (issue 15): the
resumed run executes only the remaining steps, logs the same per-step losses and ends with the same aligned
weights and the same held-out evaluation. (A new file: tests/app/test_quickstart.py is another session's.)"""
from __future__ import annotations

import shutil

import pytest
import torch
from run_tiny import StepRecorder, assert_same_weights, moved, per_step, weights

from multidom.app.quickstart.pipeline import run_quickstart
from multidom.trainers.tracking import JsonlMetrics

pytestmark = pytest.mark.slow


def _config(cache) -> dict:
    return {
        "seed": 0, "cache_dir": str(cache),
        "data": {"align_prompts": 8, "max_eval_prompts": 4},
        "tiny_lm": {"vocab_size": 300, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                  "max_length": 48},
        "sft": {"epochs": 1, "batch_size": 64},
        "training": {"max_steps": 3, "num_generations": 4, "per_device_train_batch_size": 8,
                     "baseline_samples": 4, "max_completion_length": 8, "logging_steps": 1, "save_steps": 1,
                     "plot_steps": 0, "all_estimators_steps": 0, "report_to": "none"},
        "evaluation": {"num_generations": 2, "n_boot": 10, "dominance": ["quantile"]},
    }


def test_quickstart_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = _config(tmp_path / "cache")
    full = run_quickstart(config, output_dir=str(tmp_path / "full"))
    (tmp_path / "resumed" / "align").mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "align" / "checkpoint-1", tmp_path / "resumed" / "align" / "checkpoint-1")
    steps = StepRecorder()
    monkeypatch.setattr(JsonlMetrics, "on_step_end", steps, raising=False)
    resumed = run_quickstart(config, output_dir=str(tmp_path / "resumed"), resume=True)
    assert resumed["sft"]["cached"] is True and resumed["resumed_from"].endswith("checkpoint-1")
    assert steps.steps == [2, 3]
    for key in ("loss", "kl", "rewards/sentiment/mean", "rewards/brevity/mean"):
        want, got = per_step(tmp_path / "full" / "align", key), per_step(tmp_path / "resumed" / "align", key)
        assert set(got) == {2, 3}, (key, got)
        for step in (2, 3):
            assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-7), (key, step)
    assert per_step(tmp_path / "full" / "align", "kl")[3] > 0
    a, b = weights(full["model_path"]), weights(resumed["model_path"])
    assert moved(a, weights(full["sft"]["path"])) > 1e-4
    assert_same_weights(a, b, atol=1e-6)
    assert resumed["evaluation"]["stats"] == full["evaluation"]["stats"]
