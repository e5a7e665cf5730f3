"""Tiny-model AOT runs: the held-out violation ratio falls; resume equals an uninterrupted run (through
the run recipe and the example config); PEFT LoRA with the adapter-disabled reference keeps one copy of the
base weights."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from aot_tiny import preference_rows, tiny_model, tiny_tokenizer
from datasets import Dataset
from safetensors.torch import load_file

import multidom
from multidom.app.config import load_config
from multidom.app.recipes import run_training
from multidom.lm.logprobs import sequence_logps
from multidom.trainers.aot import AOTConfig, AOTTrainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _heldout_ratio(trainer, ds) -> float:
    return trainer.evaluate(ds)["eval_dominance/quantile/eps"]


def test_training_lowers_heldout_violation_ratio(tmp_path):
    tok = tiny_tokenizer()
    train, heldout = Dataset.from_dict(preference_rows(32, seed=0)), Dataset.from_dict(preference_rows(16, seed=9))
    args = AOTConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=2,
                     max_steps=12, learning_rate=2e-2, beta=0.5, logging_steps=4, save_strategy="no", use_cpu=True,
                     max_length=64, per_device_eval_batch_size=16)
    tr = AOTTrainer(tiny_model(seed=0, hidden=32), args, processing_class=tok, train_dataset=train,
                    eval_dataset=heldout)
    before = _heldout_ratio(tr, None)
    assert before == pytest.approx(0.5)  # policy == reference: every log-ratio is 0, no side dominates
    tr.train()
    after = _heldout_ratio(tr, None)
    # Dominance: 0 means the chosen log-ratios' distribution dominates the rejected one's. A sign error or a
    # detached objective leaves it at 0.5 or pushes it above.
    assert after < 0.15, after
    logs = [row for row in tr.state.log_history if "dominance/quantile/eps" in row]
    assert logs and all(0.0 <= row["dominance/quantile/eps"] <= 1.0 for row in logs)


@pytest.fixture()
def tiny_dir(tmp_path) -> Path:
    path = tmp_path / "tiny"
    tiny_model(seed=6).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _example_config(tiny_dir: Path, tmp_path: Path, **training) -> dict:
    train = tmp_path / "train.jsonl"
    rows = preference_rows(16, seed=1)
    train.write_text("".join(json.dumps(dict(zip(rows, vals))) + "\n" for vals in zip(*rows.values())))
    overrides = [f"model.name_or_path={tiny_dir}", f"data.train={train}", "data.eval=null",
                 "training.report_to=none", "training.use_cpu=true", "training.max_length=64",
                 "training.per_device_train_batch_size=2", "training.gradient_accumulation_steps=2",
                 "training.learning_rate=0.01", "training.lr_scheduler_type=constant", "training.logging_steps=1",
                 "training.beta=0.5"] + [f"training.{k}={v}" for k, v in training.items()]
    cfg = load_config(CONFIGS / "aot_unpaired.yaml", overrides)
    assert cfg.pop("trainer") == "aot"
    return cfg


def test_resume_equals_uninterrupted(tiny_dir, tmp_path):
    cfg = _example_config(tiny_dir, tmp_path, max_steps=4, save_steps=2, num_train_epochs=1)
    full = run_training("aot", cfg, output_dir=str(tmp_path / "full"))
    assert full["global_step"] == 4
    # Resume a second run from the step-2 checkpoint of the first one.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed = run_training("aot", cfg, output_dir=str(resumed_dir), resume=True)
    assert resumed["global_step"] == 4
    a = load_file(Path(full["model_path"]) / "model.safetensors")
    b = load_file(Path(resumed["model_path"]) / "model.safetensors")
    start = tiny_model(seed=6).state_dict()
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-3  # training moved the weights
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    rrows = [json.loads(x) for x in (resumed_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    rlosses = {r["step"]: r["loss"] for r in rrows if "loss" in r}
    assert set(rlosses) == {3, 4}
    assert all("dominance/quantile/eps" in r and "rewards/chosen/mean" in r for r in rows if "loss" in r)
    for step in (3, 4):
        assert rlosses[step] == pytest.approx(losses[step], rel=1e-5)


def test_run_from_config_refuses_unknown_keys(tiny_dir, tmp_path):
    cfg = _example_config(tiny_dir, tmp_path)
    cfg["training"]["lerning_rate"] = 1.0
    with pytest.raises(ValueError, match="unknown key 'lerning_rate' in training section; did you mean 'learning_rate'"):
        run_training("aot", cfg, output_dir=str(tmp_path / "x"))
    cfg = _example_config(tiny_dir, tmp_path)
    cfg["training"]["pairing"] = "sideways"
    with pytest.raises(ValueError, match="unknown pairing 'sideways'"):
        run_training("aot", cfg, output_dir=str(tmp_path / "y"))


def test_peft_lora_with_adapter_disabled_reference(tmp_path):
    from peft import LoraConfig

    tok = tiny_tokenizer()
    base = tiny_model(seed=7)
    n_base = sum(p.numel() for p in base.parameters())
    reference = copy.deepcopy(base)
    args = AOTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3, learning_rate=5e-2,
                     beta=1.0, save_strategy="no", use_cpu=True, max_length=64, logging_steps=1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", lora_dropout=0.0)
    tr = AOTTrainer(base, args, peft_config=lora, processing_class=tok, train_dataset=Dataset.from_dict(preference_rows(8)))
    assert tr.ref_model is None  # no second model
    storages = {p.untyped_storage().data_ptr() for p in tr.model.parameters()}
    n_all = sum(p.numel() for p in tr.model.parameters())
    n_lora = sum(p.numel() for n, p in tr.model.named_parameters() if "lora_" in n)
    assert n_all == n_base + n_lora  # the base weights exist once
    assert len(storages) == len(list(tr.model.parameters()))
    trainable = {n for n, p in tr.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    tr.train()
    batch = next(iter(tr.get_train_dataloader()))
    # The reference (adapter disabled) is exactly the untouched base model ...
    torch.testing.assert_close(tr.reference_logps(batch), sequence_logps(_fused(reference), batch, 2))
    # ... while the policy moved.
    with torch.no_grad():
        policy = sequence_logps(tr.model, batch, 2)
    assert float((policy - tr.reference_logps(batch)).abs().max()) > 1e-3


def _fused(model):
    from multidom.lm.logprobs import add_log_prob_head

    add_log_prob_head(model)
    return model


def test_violation_ratio_metric_is_the_library_one(tmp_path):
    """The trainer's logged eps on hand log-ratios: the library's ratio of beta * u over beta * v (hinge)."""
    args = AOTConfig(output_dir=str(tmp_path), pairing="paired", beta=2.0, report_to="none", save_strategy="no",
                     use_cpu=True, max_length=64)
    trainer = AOTTrainer(tiny_model(seed=0), args, processing_class=tiny_tokenizer(),
                         train_dataset=Dataset.from_dict(preference_rows(4, seed=0)))
    u, v = torch.tensor([0.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])
    logps = torch.stack([u, v], dim=1)  # (N, 2): chosen, rejected; the reference at 0
    _, stats = trainer.objective(logps, torch.zeros_like(logps), {})
    # hinge, sorted coupling on beta * u = (0, 4, 6), beta * v = (2, 2, 2):
    # D(U>=V) = (2 + 0 + 0)/3, D(V>=U) = (0 + 2 + 4)/3 -> ratio 2 / (2 + 6) = 1/4
    assert float(stats["dominance/quantile/eps"]) == pytest.approx(0.25)
    eps = multidom.violation_ratio(2 * u[:, None], 2 * v[:, None], estimator="quantile", cost="hinge")
    assert float(stats["dominance/quantile/eps"]) == pytest.approx(float(eps))
    assert float(stats["rewards/chosen/mean"]) == pytest.approx(10 / 3)
    assert float(stats["rewards/rejected/mean"]) == pytest.approx(2.0)


def test_desirable_and_undesirable_datasets(tiny_dir, tmp_path):
    """KTO-style unpaired data: two files with different prompts, merged with a label column."""
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"Q{i}:", "completion": "abab"}) + "\n" for i in range(5)))
    bad.write_text("".join(json.dumps({"prompt": f"R{i}?", "completion": "zq" * (i + 1)}) + "\n" for i in range(3)))
    cfg = _example_config(tiny_dir, tmp_path, max_steps=1, save_strategy="no")
    cfg["data"] = {"desirable": str(good), "undesirable": str(bad)}
    cfg["training"].update(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    del cfg["training"]["report_to"]  # the runner's default: wandb, offline without a key
    out = run_training("aot", cfg, output_dir=str(tmp_path / "kto"))
    assert out["global_step"] == 1 and Path(out["model_path"]).is_dir()
    assert list((tmp_path / "kto" / "wandb").glob("offline-run-*"))
    row = out["final_metrics"]
    assert row["step"] == 1 and 0.0 <= row["dominance/quantile/eps"] <= 1.0
    # at the first step the policy is the reference: every log-ratio is 0 on both sides
    assert row["rewards/chosen/mean"] == pytest.approx(0.0, abs=1e-6)
