"""Bad input to the offline trainers is a clear ValueError naming the problem, never a crash inside torch."""
from __future__ import annotations

import pytest
from aot_tiny import preference_rows, tiny_model, tiny_tokenizer
from datasets import Dataset

from multidom.trainers.aot import AOTConfig, AOTTrainer
from multidom.trainers.offline import OfflineDominanceConfig, OfflineDominanceTrainer


def _aot(tmp_path, rows, **kw):
    args = AOTConfig(output_dir=str(tmp_path), use_cpu=True, save_strategy="no", max_steps=1,
                     **{"max_length": 64, "per_device_train_batch_size": 2, **kw})
    return AOTTrainer(tiny_model(), args, processing_class=tiny_tokenizer(), train_dataset=Dataset.from_dict(rows))


def _offline(tmp_path, rows, **kw):
    args = OfflineDominanceConfig(output_dir=str(tmp_path), use_cpu=True, save_strategy="no", max_steps=1,
                                  max_length=64, per_device_train_batch_size=2, **kw)
    return OfflineDominanceTrainer(tiny_model(), args, processing_class=tiny_tokenizer(),
                                   train_dataset=Dataset.from_dict(rows))


def test_missing_column(tmp_path):
    rows = preference_rows(4)
    del rows["rejected"]
    with pytest.raises(ValueError, match=r"missing column\(s\) 'rejected'"):
        _aot(tmp_path, rows)


def test_empty_completion(tmp_path):
    rows = preference_rows(4)
    rows["chosen"][2] = "  "
    with pytest.raises(ValueError, match="row 2: completion 0 is empty"):
        _aot(tmp_path, rows)


def test_prompt_longer_than_max_length(tmp_path):
    rows = preference_rows(4)
    rows["prompt"][1] = "x" * 40
    with pytest.raises(ValueError, match="row 1: the prompt has 40 tokens, which fills max_length = 20"):
        _aot(tmp_path, rows, max_length=20)


def _unpaired(labels):
    return {"prompt": [f"Q{i}:" for i in range(len(labels))], "completion": ["abab", "xyz", "ab", "qq"][: len(labels)],
            "label": labels}


def test_unpaired_dataset_without_one_side(tmp_path):
    with pytest.raises(ValueError, match=r"no undesirable \(label False\) rows"):
        _aot(tmp_path, _unpaired([True, True, True]))


def test_micro_batch_with_one_side_empty(tmp_path):
    # Per-micro-batch sorting with one unpaired example per micro-batch leaves a side empty.
    tr = _aot(tmp_path, _unpaired([True, False, True, False]), per_device_train_batch_size=1, global_batch=False)
    with pytest.raises(ValueError, match="the batch holds no (chosen|rejected) sequences"):
        tr.train()
    # On the global batch (4 examples across 4 accumulation steps) both sides are present.
    tr = _aot(tmp_path, _unpaired([True, False, True, False]), per_device_train_batch_size=1,
              gradient_accumulation_steps=4, global_batch=True)
    tr.train()
    assert tr.state.global_step == 1


def test_paired_mode_refuses_unpaired_rows(tmp_path):
    with pytest.raises(ValueError, match="paired AOT needs prompt, chosen, rejected"):
        _aot(tmp_path, _unpaired([True, False]), pairing="paired")


def test_offline_needs_two_candidates(tmp_path):
    rows = {"prompt": ["a", "b"], "completions": [["x"], ["y"]], "rewards": [[[1.0]], [[0.0]]]}
    with pytest.raises(ValueError, match="K >= 2"):
        _offline(tmp_path, rows)


def test_offline_candidate_count_must_not_vary(tmp_path):
    rows = {"prompt": ["a", "b"], "completions": [["x", "y"], ["y", "z", "w"]],
            "rewards": [[[1.0], [0.0]], [[0.0], [1.0], [2.0]]]}
    with pytest.raises(ValueError, match="row 1: 3 candidates, but row 0 has 2"):
        _offline(tmp_path, rows)


def test_offline_missing_reward_column(tmp_path):
    rows = {"prompt": ["a", "b"], "completions": [["x", "y"], ["y", "z"]]}
    with pytest.raises(ValueError, match=r"missing column\(s\) 'rewards'"):
        _offline(tmp_path, rows)


def test_offline_bad_estimator(tmp_path):
    with pytest.raises(ValueError, match="unknown estimator 'sinkhorm'"):
        OfflineDominanceConfig(output_dir=str(tmp_path), dominance={"estimator": "sinkhorm"})
