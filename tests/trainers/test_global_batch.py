"""Global-batch dominance: (b) batch 4 x accumulation 2 equals batch 8 x accumulation 1 (loss, gradients,
parameters after a step), for the AOT and the offline trainer; the per-micro-batch mode does not."""
from __future__ import annotations

import pytest
import torch
from aot_tiny import preference_rows, tiny_model, tiny_tokenizer
from datasets import Dataset
from transformers import TrainerCallback

from multidom.trainers.aot import AOTConfig, AOTTrainer
from multidom.trainers.offline import OfflineDominanceConfig, OfflineDominanceTrainer


class GradSnapshot(TrainerCallback):
    """Keep a copy of the accumulated gradients right before the optimizer step."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}


def offline_rows(n: int) -> dict:
    g = torch.Generator().manual_seed(3)
    return {"prompt": [f"Q{i}{'xyz'[i % 3]}:" for i in range(n)],
            "completions": [["ab", "cde", "fg"[: 1 + i % 2]] for i in range(n)],
            "rewards": torch.randn(n, 3, 2, generator=g).tolist()}


def _trainer(kind, tmp, bs, ga, global_batch, seed=0):
    """One SGD step of ``kind`` ("aot" unpaired, "aot_paired" or "offline"); (logged loss, grads, params)."""
    tok = tiny_tokenizer()
    model = tiny_model(seed=seed)
    common = dict(output_dir=str(tmp), per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
                  global_batch=global_batch, max_steps=1, learning_rate=0.1, optim="sgd", max_grad_norm=0.0,
                  lr_scheduler_type="constant", logging_steps=1, save_strategy="no", use_cpu=True, max_length=64)
    if kind.startswith("aot"):
        ds = Dataset.from_dict(preference_rows(8))
        pairing = "paired" if kind == "aot_paired" else "unpaired"
        tr = AOTTrainer(model, AOTConfig(beta=1.0, pairing=pairing, **common), processing_class=tok, train_dataset=ds)
    else:
        ds = Dataset.from_dict(offline_rows(8))
        tr = OfflineDominanceTrainer(model, OfflineDominanceConfig(beta=1.0, dominance={"estimator": "sinkhorn"}, **common),
                                     processing_class=tok, train_dataset=ds)
    # The policy starts away from the reference, so the gradient is not the symmetric one at P = Q.
    with torch.no_grad():
        torch.manual_seed(seed + 100)
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    snap = GradSnapshot(model)
    tr.add_callback(snap)
    tr.train()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return tr.state.log_history[0]["loss"], snap.grads, params


@pytest.mark.parametrize("kind", ["aot", "aot_paired", "offline"])
def test_4x2_equals_8x1(tmp_path, kind):
    loss8, g8, p8 = _trainer(kind, tmp_path / "a", 8, 1, True)
    loss4, g4, p4 = _trainer(kind, tmp_path / "b", 4, 2, True)
    assert loss4 == pytest.approx(loss8, rel=1e-5)
    for n in g8:
        torch.testing.assert_close(g4[n], g8[n], rtol=1e-4, atol=1e-7, msg=n)
        torch.testing.assert_close(p4[n], p8[n], rtol=1e-5, atol=1e-7, msg=n)
    if kind == "aot_paired":
        # Here the policy margins z keep the reference margins' order, so both sorts pair z_i with z_ref_i and the
        # loss separates over pairs: per-micro-batch and global coincide (no contrast to check).
        return
    # The per-micro-batch objective (TRL's behaviour) is a different function of the batch.
    loss_mb, g_mb, _ = _trainer(kind, tmp_path / "c", 4, 2, False)
    diff = max(float((g_mb[n] - g8[n]).abs().max()) for n in g8)
    scale = max(float(g8[n].abs().max()) for n in g8)
    assert diff > 1e-3 * scale
