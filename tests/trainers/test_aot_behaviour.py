"""Behaviour of the AOT trainer beyond its resume and two-process tests (issue 15): which label goes with which
row of KTO-style unpaired data, and the trainer's logged metrics on hand-written log-ratios."""
from __future__ import annotations

import pytest
import torch
from aot_tiny import tiny_model, tiny_tokenizer
from datasets import Dataset

from multidom.lm.logprobs import sequence_logps
from multidom.trainers.aot import AOTConfig, AOTTrainer

ROWS = {"prompt": ["Q1:", "Q22:", "R3?", "Q4:", "R55?", "R6?"],
        "completion": ["ab", "abab", "zq", "ababab", "zqzqzqzq", "zqz"],
        "label": [True, True, False, True, False, False]}


def _trainer(tmp_path, **kw) -> AOTTrainer:
    args = AOTConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, per_device_eval_batch_size=4,
                     max_steps=1, beta=1.0, report_to="none", save_strategy="no", use_cpu=True, max_length=64, **kw)
    return AOTTrainer(tiny_model(seed=3), args, processing_class=tiny_tokenizer(), train_dataset=Dataset.from_dict(ROWS))


def test_each_row_keeps_its_label_through_batching(tmp_path):
    """Every row's policy log-probability (computed alone) meets its own label in the objective's global batch."""
    trainer = _trainer(tmp_path)
    seen = {}

    def capture(logps, ref_logps, extras):
        seen.update(logps=logps.clone(), label=extras["label"].clone())
        return logps.sum() * 0, {}

    trainer.objective = capture
    ds = trainer.train_dataset
    trainer.evaluate(ds)
    model = trainer.model.eval()
    with torch.no_grad():
        alone = [float(sequence_logps(model, trainer._prepare_inputs(trainer.data_collator([ds[i]])), 1)[0, 0])
                 for i in range(len(ds))]
    assert len(set(round(x, 4) for x in alone)) == len(alone)  # the rows are told apart by their log-prob
    got = seen["logps"][:, 0].tolist()
    for i, lp in enumerate(alone):
        j = min(range(len(got)), key=lambda k: abs(got[k] - lp))
        assert abs(got[j] - lp) < 1e-4
        assert bool(seen["label"][j]) is ROWS["label"][i], (i, ROWS["completion"][i])


def test_metrics_on_hand_logratios_unpaired_labels(tmp_path):
    trainer = _trainer(tmp_path)
    logps = torch.tensor([[0.0], [1.0], [3.0], [1.0], [1.0]])
    label = torch.tensor([True, False, True, False, False])
    _, stats = trainer.objective(logps, torch.zeros_like(logps), {"label": label})
    # u = {0, 3} (labelled), v = {1, 1, 1}. Quantile coupling over t in [0, 1): U = 0 then 3, V = 1.
    # hinge D(U >= V) = 1/2 * 1 + 1/2 * 0 = 1/2; D(V >= U) = 1/2 * 0 + 1/2 * 2 = 1; eps = 1/2 / (3/2) = 1/3
    assert float(stats["dominance/quantile/eps"]) == pytest.approx(1 / 3, abs=1e-6)
    assert float(stats["rewards/chosen/mean"]) == pytest.approx(1.5)
    assert float(stats["rewards/rejected/mean"]) == pytest.approx(1.0)
