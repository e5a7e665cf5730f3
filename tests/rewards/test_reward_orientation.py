"""Reward orientation travels with the call (DESIGN.md §8, issue 13).

A reward model handed to anything outside the bank -- TRL's trainers above all, which ignore orientation flags --
must already be higher-is-better; the raw score stays available (``raw``, ``score``) and the bank, which orients
by ``higher_is_better`` itself, gives the same values as before.
"""
from __future__ import annotations

import math

import pytest
import torch

import reward_models as rm
from reward_models import RewardBank, RewardModel
from reward_models.rules import CallableReward, LengthReward

PROMPTS = ["p1", "p2", "p3"]
COMPS = ["one two three", "a", "x y"]


def test_lower_is_better_models_are_negated_when_called():
    brevity = rm.create({"type": "brevity"})
    assert brevity.higher_is_better is False and brevity.sign == -1.0
    assert brevity.raw(PROMPTS, COMPS) == [3.0, 1.0, 2.0]  # words
    assert brevity(PROMPTS, COMPS) == [-3.0, -1.0, -2.0]  # what GRPOTrainer receives: shorter is better
    chars = LengthReward(unit="chars", higher_is_better=False)
    assert chars(PROMPTS, COMPS) == [-13.0, -1.0, -3.0] and chars.raw(PROMPTS, COMPS) == [13.0, 1.0, 3.0]
    # higher-is-better models are returned as they are
    length = rm.create("length")
    assert length(PROMPTS, COMPS) == length.raw(PROMPTS, COMPS) == [3.0, 1.0, 2.0]


def test_callable_reward_none_and_nan_keep_their_meaning():
    fn = CallableReward(lambda p, c, **kw: [None, 2, float("nan")], name="toxicity", higher_is_better=False)
    out = fn(PROMPTS, COMPS)
    assert out[0] is None and out[1] == -2.0 and math.isnan(out[2])
    assert fn.raw(PROMPTS, COMPS)[1] == 2


class LegacyToxicity(RewardModel):
    """Written against the first contract: ``__call__`` returns the raw score (lower is better)."""

    def __init__(self):
        super().__init__("legacy_toxicity", higher_is_better=False)

    def __call__(self, prompts, completions, **columns):
        return [float(len(c)) for c in completions]


def test_subclass_with_its_own_call_is_oriented_too():
    model = LegacyToxicity()
    assert model.raw(PROMPTS, COMPS) == [13.0, 1.0, 3.0]
    assert model(PROMPTS, COMPS) == [-13.0, -1.0, -3.0]
    assert model.score(PROMPTS, COMPS) == [[13.0], [1.0], [3.0]]  # score stays raw: the bank orients


def test_bank_values_equal_the_oriented_call_and_raw_is_kept():
    models = [rm.create("brevity"), LegacyToxicity(), rm.create("length")]
    bank = RewardBank(models, dtype=torch.float64)
    scores = bank(PROMPTS, COMPS)
    for k, model in enumerate(models):  # the bank's (oriented) values are exactly what TRL gets from the model
        assert scores.values[:, k].tolist() == model(PROMPTS, COMPS)
        assert scores.values[:, k].tolist() == [model.sign * v for v in model.raw(PROMPTS, COMPS)]
    assert bank.sign.tolist() == [-1.0, -1.0, 1.0]


def test_multi_head_views_are_oriented():
    class Heads(RewardModel):
        labels = ("words", "chars")

        def __init__(self):
            super().__init__("heads", higher_is_better=False)

        def score(self, prompts, completions, **columns):
            return [[float(len(c.split())), float(len(c))] for c in completions]

    words, chars = Heads().split()
    assert words(PROMPTS, COMPS) == [-3.0, -1.0, -2.0] and words.raw(PROMPTS, COMPS) == [3.0, 1.0, 2.0]
    assert chars(PROMPTS, COMPS) == [-13.0, -1.0, -3.0]
    with pytest.raises(TypeError, match="has 2 attributes"):
        Heads()(PROMPTS, COMPS)


@pytest.mark.slow
def test_grpo_with_brevity_alone_shortens_completions(tmp_path):
    """A few TRL GRPOTrainer steps, brevity as the only reward: completion lengths must fall.

    Tiny random Llama with a character tokenizer (tests/aot_tiny.py). At the start it rarely samples EOS, so
    completions run to the 24-token cap; brevity (oriented: -characters) gives the short ones of each group a
    positive advantage. Before orientation travelled with the call, TRL got +length and lengths stayed at the
    cap: the negative control (the raw score handed to TRL) shows the measurement can tell.
    """
    from aot_tiny import tiny_model, tiny_tokenizer
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(1)
    prompts = Dataset.from_dict({"prompt": [f"Q{i}:" for i in range(16)]})
    brevity = rm.create({"type": "brevity", "unit": "chars"})

    def run(reward_func, out):
        set_seed(0)
        args = GRPOConfig(
            output_dir=str(out), max_steps=12, per_device_train_batch_size=16, num_generations=8,
            max_completion_length=24, learning_rate=0.1, beta=0.0, logging_steps=1, report_to="none",
            save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, temperature=1.0,
        )
        trainer = GRPOTrainer(model=tiny_model(seed=0), reward_funcs=[reward_func], args=args,
                              train_dataset=prompts, processing_class=tiny_tokenizer())
        trainer.train()
        lengths = [row["completions/mean_length"] for row in trainer.state.log_history
                   if "completions/mean_length" in row]
        return lengths

    lengths = run(brevity, tmp_path / "oriented")
    assert len(lengths) == 12
    first, last = sum(lengths[:3]) / 3, sum(lengths[-3:]) / 3
    assert first > 18.0  # long at the start (24-token cap)
    assert last < 0.5 * first, lengths  # measured: 22.9, 23.1, 20.0, 23.4, 17.4, 9.0, ..., 2.0, 1.3, 1.9

    def raw_length(prompts, completions, **kwargs):  # the old behaviour: brevity's raw value
        return brevity.raw(prompts, completions)

    control = run(raw_length, tmp_path / "raw")
    assert sum(control[-3:]) / 3 > 0.9 * first, control  # measured: back at the 24-token cap from step 6
