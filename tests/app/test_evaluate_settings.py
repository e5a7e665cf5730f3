"""``multidom evaluate`` samples as the evaluated run trained (issue 13): its generation settings come from the
run's ``multidom_run.json`` unless the evaluation config sets them."""
from __future__ import annotations

import json

from multidom.app.config import from_mapping
from multidom.app.evaluate import EvaluateConfig, _sampling, run_generation_settings


def _run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "multidom_run.json").write_text(json.dumps({"trainer": "online", "training": {
        "max_completion_length": 24, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "learning_rate": 1e-3}}))
    return run


def test_settings_are_read_from_the_run_a_checkpoint_belongs_to(tmp_path):
    run = _run_dir(tmp_path)
    assert run_generation_settings(run / "checkpoint-4") == {"max_completion_length": 24, "temperature": 0.7,
                                                             "top_p": 0.9, "top_k": 5}
    assert run_generation_settings(tmp_path) == {}


def test_the_evaluation_config_overrides_the_run(tmp_path):
    run = _run_dir(tmp_path)
    base = {"models": [{"name": "ref", "path": str(tmp_path)}, {"name": "new", "path": str(run / "checkpoint-4")}],
            "prompts": ["p"], "rewards": ["length"]}
    s = _sampling(from_mapping(EvaluateConfig, base, "evaluate"))
    assert (s.max_new_tokens, s.temperature, s.top_p, s.top_k) == (24, 0.7, 0.9, 5)  # the run's: 24, not 48
    s = _sampling(from_mapping(EvaluateConfig, {**base, "max_new_tokens": 8, "temperature": 1.0}, "evaluate"))
    assert (s.max_new_tokens, s.temperature) == (8, 1.0)
    plain = {**base, "models": [{"name": "ref", "path": str(tmp_path)}, {"name": "x", "path": str(tmp_path)}]}
    assert _sampling(from_mapping(EvaluateConfig, plain, "evaluate")).max_new_tokens == 48  # no run: the default
