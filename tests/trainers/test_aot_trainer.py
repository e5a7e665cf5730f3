"""(a) multidom's AOT trainer equals TRL's DPOTrainer(loss_type="aot" | "aot_unpaired"): same batch, same
tiny random-weight model, per-micro-batch mode, one micro-batch -> same loss and same gradients."""
from __future__ import annotations

import copy

import pytest
import torch
from aot_tiny import preference_rows, tiny_model, tiny_tokenizer
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from multidom.trainers.aot import AOTConfig, AOTTrainer

TRL_LOSS = {"paired": "aot", "unpaired": "aot_unpaired"}


def _step(trainer, model):
    """One real ``training_step`` (forward, loss, backward) on the trainer's first batch; (loss, grads)."""
    trainer.current_gradient_accumulation_steps = 1
    batch = next(iter(trainer.get_train_dataloader()))
    model.zero_grad()
    loss = trainer.training_step(model, batch)
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("pairing", ["paired", "unpaired"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_loss_and_grads_equal_trl(tmp_path, pairing, label_smoothing):
    tok = tiny_tokenizer()
    ds = Dataset.from_dict(preference_rows(6))
    base = tiny_model(seed=1)
    # Move the policy away from the reference so that both the loss and its sort order are non-trivial.
    policy = copy.deepcopy(base)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    common = dict(per_device_train_batch_size=6, beta=0.5, label_smoothing=label_smoothing, report_to="none",
                  use_cpu=True, max_length=64)

    # bf16=False: TRL defaults to bf16 autocast, which it applies to the reference model even on CPU.
    trl_model = copy.deepcopy(policy)
    trl = DPOTrainer(model=trl_model, ref_model=copy.deepcopy(base), processing_class=tok, train_dataset=ds,
                     args=DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=[TRL_LOSS[pairing]], bf16=False,
                                    gradient_checkpointing=False, **common))
    trl_loss, trl_grads = _step(trl, trl_model)

    ours_model = copy.deepcopy(policy)
    ours = AOTTrainer(ours_model, AOTConfig(output_dir=str(tmp_path / "md"), pairing=pairing, global_batch=False,
                                            **common),
                      ref_model=copy.deepcopy(base), processing_class=tok, train_dataset=ds)
    our_loss, our_grads = _step(ours, ours_model)

    assert trl_loss > 0.05  # -logsigmoid at the sorted deltas, not a degenerate zero
    assert our_loss == pytest.approx(trl_loss, rel=1e-5, abs=1e-7)
    assert trl_grads.keys() == our_grads.keys()
    total = sum(g.abs().sum() for g in trl_grads.values())
    assert total > 1e-4
    for name, g in trl_grads.items():
        torch.testing.assert_close(our_grads[name], g, rtol=1e-4, atol=1e-7, msg=name)


def test_global_batch_one_micro_batch_equals_per_micro_batch(tmp_path):
    """With one micro-batch and one process the global-batch surrogate gives the same gradient."""
    tok = tiny_tokenizer()
    ds = Dataset.from_dict(preference_rows(6))
    grads = {}
    for mode in (False, True):
        model = tiny_model(seed=2)
        with torch.no_grad():
            model.lm_head.weight.add_(0.5 * torch.randn_like(model.lm_head.weight))
        ref = tiny_model(seed=2)
        tr = AOTTrainer(model, AOTConfig(output_dir=str(tmp_path / str(mode)), global_batch=mode, beta=1.0,
                                         per_device_train_batch_size=6, use_cpu=True, max_length=64),
                        ref_model=ref, processing_class=tok, train_dataset=ds)
        tr.current_gradient_accumulation_steps = 1
        batch = next(iter(tr.get_train_dataloader()))
        if mode:
            tr.model_wrapped = model
            tr._plan = tr._global_plan([batch])
        model.zero_grad()
        tr.training_step(model, batch)
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-4, atol=1e-8, msg=name)


def test_precomputed_reference_equals_separate_reference(tmp_path):
    """Reference log-probs cached with the dataset (no reference model in memory) give the same step."""
    tok = tiny_tokenizer()
    ds = Dataset.from_dict(preference_rows(6))
    out = {}
    for cached in (False, True):
        model = tiny_model(seed=3)
        kwargs = {} if cached else {"ref_model": tiny_model(seed=3)}
        tr = AOTTrainer(model, AOTConfig(output_dir=str(tmp_path / str(cached)), precompute_ref_log_probs=cached,
                                         beta=1.0, per_device_train_batch_size=6, use_cpu=True, max_length=64),
                        processing_class=tok, train_dataset=ds, **kwargs)
        if cached:
            assert tr.ref_model is None and "ref_logps" in tr.train_dataset.column_names
        with torch.no_grad():  # move the policy after the cache was filled
            torch.manual_seed(0)
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
        out[cached] = _step(tr, model)
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    for name, g in out[False][1].items():
        torch.testing.assert_close(out[True][1][name], g, rtol=1e-4, atol=1e-7, msg=name)
