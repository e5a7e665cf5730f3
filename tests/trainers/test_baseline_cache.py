"""The baseline cloud is data (DESIGN.md §8): seeded, cached under a key of model, sampling settings and
reward bank (another bank of the same width resamples), written atomically; and the online trainer's PEFT
reference is the policy with its adapter disabled (no copy)."""
from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from lm_tiny import PROMPTS, chat, load, save_tiny_lm

from multidom.trainers.online import OnlineDominanceConfig, OnlineDominanceTrainer
from multidom.trainers.online_baseline import Scorer, add_baseline_column


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "lm")


class Counting:
    """A 2-attribute scorer that counts the completions it scored."""

    def __init__(self, name: str, scale: float = 1.0):
        self.calls, self.scale = 0, scale
        self.scorer = Scorer(self, ["words", name], spec=[{"name": name, "scale": scale}])

    def __call__(self, prompts, completions, **_):
        self.calls += len(completions)
        return [[float(len(c[-1]["content"].split())), self.scale * float("day" in c[-1]["content"])]
                for c in completions]


def _cfg(tmp_path, **kw):
    return OnlineDominanceConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", num_generations=2,
                                 baseline_samples=4, max_completion_length=6, per_device_train_batch_size=4,
                                 seed=kw.pop("seed", 0), **kw)


def test_cache_reused_only_under_the_same_key(lm, tmp_path, monkeypatch):
    monkeypatch.delenv("MULTIDOM_CACHE", raising=False)
    model, tok = load(lm)
    data = Dataset.from_dict({"prompt": chat(PROMPTS)})
    cache = tmp_path / "baseline_cache.json"
    a = Counting("sunny")
    first = add_baseline_column(data, _cfg(tmp_path), a.scorer, model=model, tokenizer=tok, cache_path=cache)
    assert a.calls == 4 * len(PROMPTS)
    again = add_baseline_column(data, _cfg(tmp_path), a.scorer, model=model, tokenizer=tok, cache_path=cache)
    assert a.calls == 4 * len(PROMPTS)  # same key: read from the cache, nothing sampled or scored
    assert again["baseline_rewards"] == first["baseline_rewards"]
    b = Counting("sunny", scale=2.0)  # another bank of the same width
    other = add_baseline_column(data, _cfg(tmp_path), b.scorer, model=model, tokenizer=tok, cache_path=cache)
    assert b.calls == 4 * len(PROMPTS)  # resampled, not reused
    assert [[v[1] for v in row] for row in other["baseline_rewards"]] == \
        [[2.0 * v[1] for v in row] for row in first["baseline_rewards"]]  # same seeded samples, the new bank
    c = Counting("sunny")
    add_baseline_column(data, _cfg(tmp_path, temperature=0.5), c.scorer, model=model, tokenizer=tok, cache_path=cache)
    assert c.calls == 4 * len(PROMPTS)  # other sampling settings: resampled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline_cache.json"]  # atomic: no temporary left
    saved = json.loads(cache.read_text())
    assert saved["key"]["sampling"]["temperature"] == 0.5 and saved["world_size"] == 1
    # a prompt subset reuses the rows (per-prompt seeds): nothing sampled
    d = Counting("sunny")
    sub = add_baseline_column(data.select([1, 2]), _cfg(tmp_path, temperature=0.5), d.scorer, model=model,
                              tokenizer=tok, cache_path=cache)
    assert d.calls == 0 and len(sub) == 2


def test_shared_cache_serves_a_new_run_with_the_same_key(lm, tmp_path, monkeypatch):
    """With MULTIDOM_CACHE set, a new run (another output dir) of the same model, settings and bank samples
    nothing; another bank still resamples."""
    monkeypatch.setenv("MULTIDOM_CACHE", str(tmp_path / "shared"))
    model, tok = load(lm)
    data = Dataset.from_dict({"prompt": chat(PROMPTS)})
    a, b, c = Counting("sunny"), Counting("sunny"), Counting("sunny", scale=3.0)
    first = add_baseline_column(data, _cfg(tmp_path), a.scorer, model=model, tokenizer=tok,
                                cache_path=tmp_path / "run1" / "baseline_cache.json")
    second = add_baseline_column(data, _cfg(tmp_path), b.scorer, model=model, tokenizer=tok,
                                 cache_path=tmp_path / "run2" / "baseline_cache.json")
    assert a.calls == 4 * len(PROMPTS) and b.calls == 0
    assert second["baseline_rewards"] == first["baseline_rewards"]
    assert (tmp_path / "run2" / "baseline_cache.json").is_file()  # the run keeps its own copy
    assert len(list((tmp_path / "shared" / "baselines").glob("*.json"))) == 1
    add_baseline_column(data, _cfg(tmp_path), c.scorer, model=model, tokenizer=tok,
                        cache_path=tmp_path / "run3" / "baseline_cache.json")
    assert c.calls == 4 * len(PROMPTS)


def test_baseline_is_seeded(lm, tmp_path):
    model, tok = load(lm)
    data = Dataset.from_dict({"prompt": chat(PROMPTS)})
    runs = [add_baseline_column(data, _cfg(tmp_path, seed=s), Counting("sunny").scorer, model=model, tokenizer=tok)
            ["baseline_rewards"] for s in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_peft_reference_is_the_policy_with_its_adapter_disabled(lm, tmp_path):
    from peft import LoraConfig

    model, tok = load(lm)
    base, _ = load(lm)
    args = _cfg(tmp_path, baseline_refresh_steps=1, beta=0.0, max_steps=1, save_strategy="no", plot_steps=0,
                all_estimators_steps=0, bf16=False)
    trainer = OnlineDominanceTrainer(model, args, Dataset.from_dict({"prompt": chat(PROMPTS)}),
                                     Counting("sunny").scorer, processing_class=tok,
                                     peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    policy = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad():  # move the adapter away from zero: the policy now differs from the base
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5 * torch.randn_like(p))
    ids = torch.tensor([[1, 7, 8, 9, 10]])
    with torch.no_grad():
        want, moved = base(ids).logits, policy(ids).logits
        assert (moved - want).abs().max() > 1e-3
        with trainer.reference_model() as ref:
            got = ref(ids).logits
            shared = {p.data_ptr() for p in policy.parameters()}
            assert all(p.data_ptr() in shared for p in ref.parameters())  # the policy itself, no copy
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(policy(ids).logits, moved)  # the adapter is back on
    assert trainer._frozen is None and trainer.dominance.reference == trainer.reference_model


def test_full_fine_tune_reference_keeps_the_initial_weights(lm, tmp_path):
    model, tok = load(lm)
    base, _ = load(lm)
    args = _cfg(tmp_path, baseline_refresh_steps=1, beta=0.0, max_steps=1, save_strategy="no", plot_steps=0,
                all_estimators_steps=0, bf16=False)
    trainer = OnlineDominanceTrainer(model, args, Dataset.from_dict({"prompt": chat(PROMPTS)}),
                                     Counting("sunny").scorer, processing_class=tok)
    with torch.no_grad():  # train-like changes to the policy must not reach the reference
        for p in trainer.model.parameters():
            p.add_(0.1)
    ids = torch.tensor([[1, 7, 8, 9, 10]])
    with torch.no_grad(), trainer.reference_model() as ref:
        torch.testing.assert_close(ref(ids).logits, base(ids).logits)
        assert not any(p.requires_grad for p in ref.parameters())
