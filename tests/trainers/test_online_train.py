"""Tiny-model runs of the online dominance trainer on a task with exactly known rewards (issue 5).

The toy task (:mod:`multidom.app.toy`): attributes share of class-A tokens, share of class-B
tokens, brevity. A random tiny Llama starts at ``eps(policy ≽ reference) ≈ 0.5`` against itself; after a
short CPU run it must be below 0.3 on held-out prompts with every attribute's mean at or above the
reference's. The flipped-sign control shows the assertion can fail: the same run with ``+phi`` as the
reward moves eps above 0.5.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

import multidom
from multidom.app.recipes import run_training
from multidom.app.toy import build_toy_model, reward_cloud, toy_prompts, toy_rewards
from multidom.trainers.online import OnlineDominanceConfig, OnlineDominanceTrainer
from multidom.trainers.online_baseline import as_bank

pytestmark = pytest.mark.slow
STEPS = 24


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = build_toy_model(tmp_path_factory.mktemp("toy") / "model")
    train = toy_prompts(32, seed=1)
    held = [p for p in toy_prompts(24, seed=2) if p not in set(train)][:12]
    return path, train, held


def _train(path, train, out, *, flip=False, steps=STEPS):
    tok = AutoTokenizer.from_pretrained(path)
    args = OnlineDominanceConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=64, num_generations=8,
        max_completion_length=8, learning_rate=1e-2, beta=0.04, dominance={"estimator": "sinkhorn"}, report_to="none",
        logging_steps=4, save_strategy="no", baseline_samples=8, plot_steps=12, all_estimators_steps=12,
        seed=0, use_cpu=True,
    )
    trainer = OnlineDominanceTrainer(AutoModelForCausalLM.from_pretrained(path), args,
                              Dataset.from_dict({"prompt": train}), toy_rewards(), processing_class=tok)
    if flip:  # negative control: reward +phi instead of -phi
        inner = trainer.dominance.__call__

        class Flipped:
            __name__ = "dominance"

            def __call__(self, *a, **k):
                return [None if r is None else -r for r in inner(*a, **k)]

        trainer.reward_funcs[0] = Flipped()
    trainer.train()
    return trainer


def _eval(model, tok, held, scorer, seed=5):
    return reward_cloud(model, tok, held, 32, scorer, seed=seed).reshape(-1, 3)


def _eps(p, r):
    return float(multidom.violation_ratio(p, r, estimator="sinkhorn", cost="hinge", reg=0.05))


def test_dominance_training_beats_reference_on_every_attribute(toy, tmp_path):
    path, train, held = toy
    tok = AutoTokenizer.from_pretrained(path)
    scorer = as_bank(toy_rewards())
    ref = AutoModelForCausalLM.from_pretrained(path)
    r = _eval(ref, tok, held, scorer)
    eps0 = _eps(_eval(ref, tok, held, scorer, seed=6), r)
    assert 0.4 < eps0 < 0.6  # the reference against itself
    trainer = _train(path, train, tmp_path / "run")
    p = _eval(trainer.model, tok, held, scorer)
    eps = _eps(p, r)
    assert eps < 0.3, eps
    gain = p.mean(0) - r.mean(0)
    assert (gain >= 0).all(), gain.tolist()  # no attribute traded away
    assert gain[0] > 0.05 and gain[1] > 0.05, gain.tolist()  # both token classes, not one
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {k for row in rows for k in row}
    for key in ("dominance/sinkhorn/eps", "dominance/quantile/eps", "dominance/sliced/eps", "kl",
                "dominance/masked_fraction", "rewards/share_a/q10", "rewards/share_b/baseline_q90",
                "timing/dominance_s"):
        assert key in logged, key
    assert (tmp_path / "run" / "plots" / "clouds_000012.png").is_file()
    assert all(torch.isfinite(q).all() for q in trainer.model.parameters())


def test_flipped_advantage_sign_fails_the_criterion(toy, tmp_path):
    path, train, held = toy
    tok = AutoTokenizer.from_pretrained(path)
    scorer = as_bank(toy_rewards())
    r = _eval(AutoModelForCausalLM.from_pretrained(path), tok, held, scorer)
    trainer = _train(path, train, tmp_path / "flip", flip=True, steps=12)
    assert _eps(_eval(trainer.model, tok, held, scorer), r) > 0.5


def test_run_training_example_resume_and_bad_keys(toy, tmp_path):
    path, _, _ = toy
    config = yaml.safe_load(open("configs/online_toy.yaml"))
    config.pop("trainer")
    config["model"] = str(path)
    config["training"].update(max_steps=2, save_steps=2, logging_steps=1, report_to="wandb", plot_steps=1,
                              per_device_train_batch_size=16, baseline_samples=2)
    out = tmp_path / "cfg"
    summary = run_training("online", config, output_dir=str(out))  # finishes its wandb run (offline files complete)
    media = {p.suffix for p in out.rglob("*") if p.is_file() and "media" in p.parts}
    assert {".png", ".json"} <= media, media  # the clouds scatter and the samples table reached (offline) wandb
    config["training"].update(report_to="none", plot_steps=0)
    assert summary["global_step"] == 2 and summary["reward_attributes"] == ["count_a", "count_b", "brevity"]
    assert (out / "final" / "config.json").is_file() and (out / "checkpoint-2").is_dir()
    assert math.isfinite(summary["final_metrics"]["dominance/sinkhorn/eps"])
    config["training"]["max_steps"] = 3
    resumed = run_training("online", config, output_dir=str(out), resume=True)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["global_step"] == 3
    bad = {**config, "training": {**config["training"], "lerning_rate": 1e-3}}
    with pytest.raises(ValueError, match="unknown key 'lerning_rate' in training section; did you mean 'learning_rate'"):
        run_training("online", bad, output_dir=str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="unknown reward model"):
        run_training("online", {**config, "rewards": [{"type": "sentimnt"}]}, output_dir=str(tmp_path / "bad2"))


def test_a_dead_reward_stops_the_run_naming_it(toy, tmp_path):
    """A reward that never returns a finite score masks every sample: before 0.2 the run went on with loss 0 and
    grad_norm 0 (exit 0). Now the first step fails and names the reward."""
    from reward_models import create

    path, train, _ = toy

    def never(prompts, completions, **_):
        return [None] * len(completions)

    bank = [*toy_rewards(attributes=("share_a",)), create({"type": "callable", "fn": never, "name": "never"})]
    args = OnlineDominanceConfig(output_dir=str(tmp_path / "masked"), max_steps=2, per_device_train_batch_size=16,
                                 num_generations=4, max_completion_length=8, learning_rate=1e-2, report_to="none",
                                 logging_steps=1, save_strategy="no", baseline_samples=2, plot_steps=0, use_cpu=True)
    trainer = OnlineDominanceTrainer(AutoModelForCausalLM.from_pretrained(path), args,
                              Dataset.from_dict({"prompt": train[:8]}), bank,
                              processing_class=AutoTokenizer.from_pretrained(path))
    assert all(len(v) == 0 for v in trainer.train_dataset["baseline_rewards"])  # masked baseline points dropped
    with pytest.raises(RuntimeError, match="reward attribute.*'never'.*no finite score.*1 consecutive step"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_reference_baseline_resampled_every_k_steps(toy, tmp_path):
    path, train, _ = toy
    args = OnlineDominanceConfig(output_dir=str(tmp_path / "refresh"), max_steps=2, per_device_train_batch_size=16,
                                 num_generations=4, max_completion_length=8, learning_rate=1e-2, report_to="none",
                                 logging_steps=1, save_strategy="no", baseline_samples=2, baseline_refresh_steps=1,
                                 plot_steps=0, use_cpu=True)
    trainer = OnlineDominanceTrainer(AutoModelForCausalLM.from_pretrained(path), args,
                              Dataset.from_dict({"prompt": train[:8]}), toy_rewards(),
                              processing_class=AutoTokenizer.from_pretrained(path))
    assert trainer.ref_model is not None and trainer._frozen is None  # beta > 0: TRL's frozen reference, no copy
    with trainer.reference_model() as ref:
        assert ref is trainer.ref_model
    trainer.train()
    fresh = trainer.dominance._fresh
    assert len(fresh) == 8 and all(len(v) == 2 and len(v[0]) == 3 for v in fresh.values())
    with pytest.raises(ValueError, match="baseline_refresh_steps needs baseline_source='reference'"):
        OnlineDominanceConfig(output_dir=str(tmp_path), baseline_source="buffer", baseline_refresh_steps=2,
                              report_to="none", use_cpu=True)


def test_masked_samples_get_exactly_zero_advantage_in_trl(toy, tmp_path):
    import pandas as pd

    from reward_models import create

    path, train, _ = toy

    def sometimes(prompts, completions, completion_ids=None, **_):  # masks completions of odd length
        return [None if len(ids) % 2 else 1.0 - len(ids) / 8 for ids in completion_ids]

    bank = [*toy_rewards(attributes=("share_a", "share_b")), create({"type": "callable", "fn": sometimes,
                                                                    "name": "even_brevity"})]
    args = OnlineDominanceConfig(output_dir=str(tmp_path / "partial"), max_steps=1, per_device_train_batch_size=32,
                                 num_generations=8, max_completion_length=8, report_to="none", logging_steps=1,
                                 save_strategy="no", baseline_samples=4, plot_steps=0, use_cpu=True,
                                 log_completions=True)
    trainer = OnlineDominanceTrainer(AutoModelForCausalLM.from_pretrained(path), args,
                              Dataset.from_dict({"prompt": train[:8]}), bank,
                              processing_class=AutoTokenizer.from_pretrained(path))
    trainer.train()
    table = pd.concat(pd.read_parquet(p) for p in (tmp_path / "partial" / "completions").glob("*.parquet"))
    masked = table["dominance"].isna()
    assert 0 < masked.sum() < len(table)
    assert (table.loc[masked, "advantage"] == 0.0).all()  # TRL: NaN reward -> nan_to_num -> exactly 0
    assert (table.loc[~masked, "advantage"] != 0.0).any()
    row = [h for h in trainer.state.log_history if "dominance/masked_fraction" in h][0]
    assert row["dominance/masked_fraction"] == pytest.approx(masked.mean())
