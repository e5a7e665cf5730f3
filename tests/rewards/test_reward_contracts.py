"""Contracts of the reward-model base class that the other tests left open (found by mutation testing, issue 15):
the cache key of chat prompts, the text of message parts, names, the legacy ``__call__`` contract of a subclass,
the views of a multi-attribute model passing the dataset's columns, and the message of a model called whole."""
from __future__ import annotations

from pathlib import Path

import pytest

from reward_models.base import RewardModel, prompt_text, text_key


def test_text_key_of_a_chat_is_its_sorted_json():
    chat = [{"role": "user", "content": "hi"}]
    assert text_key(chat) == '[{"content": "hi", "role": "user"}]'
    assert text_key("plain") == "plain"
    assert text_key([{"role": "user", "content": "hi", "file": Path("a/b")}]).endswith('"file": "a/b", "role": "user"}]')
    assert text_key(chat) != text_key([{"role": "user", "content": "ho"}])


def test_prompt_text_of_message_parts_and_of_chats_without_a_user():
    parts = [{"role": "user", "content": ["a", {"type": "text", "text": "b"}, {"type": "image"}]}]
    assert prompt_text(parts) == "ab"
    assert prompt_text([{"role": "system", "content": "s"}, {"role": "assistant", "content": "t"}]) == "s\nt"


def _legacy() -> type:
    """A subclass with the first version's contract (``__call__`` returns the raw score), defined when called:
    ``__init_subclass__`` runs at class creation, so the class is made inside the test."""

    class Legacy(RewardModel):
        def __call__(self, prompts, completions, **columns):
            return [float(len(c)) for c in completions]

    return Legacy


def test_a_subclass_call_becomes_its_raw_and_calls_are_oriented():
    model = _legacy()("chars", higher_is_better=False)
    assert model.raw(["p"], ["abc"]) == [3.0]
    assert model(["p"], ["abc"]) == [-3.0]


@pytest.mark.parametrize("name", ["", 3, None])
def test_a_reward_model_needs_a_string_name(name):
    with pytest.raises(ValueError, match=r"^a reward model needs a non-empty string name, got "):
        _legacy()(name)


class _Two(RewardModel):
    labels = ("x", "y")

    def __init__(self):
        super().__init__("two")
        self.calls = 0

    def score(self, prompts, completions, *, ref=None, **_):
        self.calls += 1
        return [[float(len(c)), float(r)] for c, r in zip(completions, ref)]


def test_views_of_a_multi_attribute_model_pass_the_columns_and_score_once():
    model = _Two()
    x, y = model.split()
    assert (x.name, y.name) == ("two/x", "two/y")
    assert x(["p", "q"], ["ab", "c"], ref=[5, 7]) == [2.0, 1.0]
    assert y(["p", "q"], ["ab", "c"], ref=[5, 7]) == [5.0, 7.0]
    assert model.calls == 1  # the second view read the memo of the same batch
    with pytest.raises(TypeError, match=r"^reward model 'two' has 2 attributes \['x', 'y'\]; score it through a "
                                        r"RewardBank, or pass model.split\(\) to TRL \(one reward function per head\)$"):
        model(["p"], ["c"], ref=[1])
