"""Trainer contracts the behaviour tests left open (found by mutation testing, issue 15): config defaults and
the messages of bad settings, dataset column checks, the tokenizer's pad id reaching the collator, the aggregator's
record of active prompts, the metrics file's fallback for values JSON cannot hold, and the baseline cache's
recorded world size."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from aot_tiny import tiny_model, tiny_tokenizer
from datasets import Dataset

from multidom.trainers.aot import AOTConfig, AOTTrainer, prepare_aot_dataset
from multidom.trainers.baseline_cache import write_rows
from multidom.trainers.offline import prepare_offline_dataset
from multidom.trainers.online import DominanceReward, OnlineDominanceConfig
from multidom.trainers.online_baseline import Scorer, add_baseline_column, baseline_rows
from multidom.trainers.tracking import _jsonable


def _online(tmp_path, **kw) -> OnlineDominanceConfig:
    return OnlineDominanceConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **kw)


def test_online_config_defaults_and_messages(tmp_path):
    spec = _online(tmp_path, dominance={"estimator": "sliced"}).dominance
    assert (spec.estimator, spec.cost) == ("sliced", "logistic")  # keys left out take SPEC_DEFAULTS
    assert _online(tmp_path).dominance.estimator == "quantile"
    with pytest.raises(ValueError, match=r"beta \(KL coefficient\) must be >= 0, got -1"):
        _online(tmp_path, beta=-1.0)


def test_aot_config_messages(tmp_path):
    with pytest.raises(ValueError, match=r"^label_smoothing must lie in \[0, 0.5\), got 0.5$"):
        AOTConfig(output_dir=str(tmp_path), label_smoothing=0.5, report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match=r"^AOT compares implicit rewards beta \* logratio: dominance.normalisation "
                                         r"must be 'none'$"):
        AOTConfig(output_dir=str(tmp_path), dominance={"normalisation": "zscore"}, report_to="none", use_cpu=True)


def test_dataset_column_checks_name_the_missing_columns():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"^AOT dataset is missing column\(s\) 'label'; it needs prompt, completion, "
                                         r"label"):
        prepare_aot_dataset(Dataset.from_dict({"prompt": ["Q:"], "completion": ["ab"]}), tok, max_length=32)
    with pytest.raises(ValueError, match=r"^offline dataset is missing column\(s\) 'rewards'"):
        prepare_offline_dataset(Dataset.from_dict({"prompt": ["Q:"], "completions": [["a", "b"]]}), tok,
                                max_length=32)
    rows = Dataset.from_dict({"prompt": ["Q:"], "completions": [["a", "b", "c"]], "x": [[1.0, 2.0]]})
    with pytest.raises(ValueError, match=r"^row 0: reward column 'x' must hold one value per candidate \(3\)$"):
        prepare_offline_dataset(rows, tok, max_length=32, reward_columns=["x"])


def test_baseline_sources_name_what_they_need(tmp_path):
    cfg = _online(tmp_path, baseline_source="reference")
    scorer = Scorer(lambda p, c, **_: [[1.0] for _ in c], ["r"])
    with pytest.raises(ValueError, match=r"^baseline_source='reference' needs the model and tokenizer$"):
        baseline_rows(Dataset.from_dict({"prompt": ["a"]}), cfg, scorer)
    with pytest.raises(ValueError, match=r"^baseline_source='column' but the dataset has no column 'baseline_rewards'"):
        add_baseline_column(Dataset.from_dict({"prompt": ["a"]}), _online(tmp_path, baseline_source="column"), scorer)


def test_the_tokenizers_pad_id_pads_the_batches(tmp_path):
    tok = tiny_tokenizer()
    assert tok.pad_token_id != tok.eos_token_id
    args = AOTConfig(output_dir=str(tmp_path), report_to="none", save_strategy="no", use_cpu=True, max_length=32)
    rows = Dataset.from_dict({"prompt": ["Q:", "R:"], "chosen": ["ab", "abab"], "rejected": ["z", "zz"]})
    trainer = AOTTrainer(tiny_model(seed=0), args, processing_class=tok, train_dataset=rows)
    assert trainer.data_collator.pad_token_id == tok.pad_token_id
    assert trainer.processing_class is tok


def test_aggregator_records_the_active_prompts(tmp_path):
    cfg = _online(tmp_path, num_generations=2, per_device_train_batch_size=4, dominance={"estimator": "quantile"},
                  plot_steps=0, all_estimators_steps=0)
    agg = DominanceReward(Scorer(lambda p, c, **_: [[float(len(x))] for x in c], ["len"]), cfg)
    agg(["a", "a", "b", "b"], ["x", "xx", "y", "yyy"], baseline_rewards=[[[1.0]], [[1.0]], [], []])
    assert agg.last["active"].tolist() == [True, False]  # prompt b has no baseline point


def test_metrics_rows_hold_json_or_text(tmp_path):
    assert _jsonable(Path("a/b")) == "a/b" and _jsonable(math.inf) is None and _jsonable(3) == 3


def test_baseline_cache_records_one_process_by_default(tmp_path):
    write_rows(tmp_path / "c.json", {"k": 1}, {"p": [[1.0]]})
    assert json.loads((tmp_path / "c.json").read_text())["world_size"] == 1
