"""What the reference baseline cloud's cache key depends on (:func:`multidom.trainers.online_baseline.baseline_key`):
a cloud sampled by another engine, model, sampling setting, sample count, seed or bank is never reused; the
process layout (world size) is not part of it, because per-prompt seeds make the samples the same under any
sharding."""
from __future__ import annotations

from aot_tiny import tiny_model

from multidom.trainers.online import OnlineDominanceConfig
from multidom.trainers.online_baseline import Scorer, baseline_key


def _cfg(tmp_path, **kw) -> OnlineDominanceConfig:
    return OnlineDominanceConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                                 baseline_source="reference", **kw)


def _scorer(names=("r",)) -> Scorer:
    return Scorer(lambda p, c, **_: [[1.0] * len(names) for _ in c], list(names), spec={"bank": list(names)})


def test_every_input_of_the_sampled_cloud_changes_the_key(tmp_path):
    model = tiny_model(seed=0)
    base = baseline_key(_cfg(tmp_path), _scorer(), model, engine="hf")
    assert base == baseline_key(_cfg(tmp_path), _scorer(), tiny_model(seed=0), engine="hf")  # same inputs, same key
    changed = {
        "engine": baseline_key(_cfg(tmp_path), _scorer(), model, engine="vllm"),
        "model": baseline_key(_cfg(tmp_path), _scorer(), tiny_model(seed=1), engine="hf"),
        "sampling": baseline_key(_cfg(tmp_path, temperature=0.7), _scorer(), model, engine="hf"),
        "samples": baseline_key(_cfg(tmp_path, baseline_samples=4), _scorer(), model, engine="hf"),
        "seed": baseline_key(_cfg(tmp_path, seed=1), _scorer(), model, engine="hf"),
        "bank": baseline_key(_cfg(tmp_path), _scorer(("r", "s")), model, engine="hf"),
    }
    for what, key in changed.items():
        assert key != base, what
    assert (base["engine"], changed["engine"]["engine"]) == ("hf", "vllm")
    assert base["samples"] == 8 and changed["samples"]["samples"] == 4


def test_a_dataset_baseline_is_keyed_by_its_column_not_by_a_model(tmp_path):
    cfg = OnlineDominanceConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, baseline_source="dataset",
                                baseline_response_column="answer")
    key = baseline_key(cfg, _scorer())
    assert key["response_column"] == "answer" and "model" not in key and "engine" not in key
