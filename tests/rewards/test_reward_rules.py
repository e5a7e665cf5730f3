"""Rule-based reward models: hand-computed scores, the contract (chat messages, __name__) and bad input."""
import pytest

import reward_models as rm
from reward_models.rules import CallableReward, ColumnReward, FormatReward, LengthReward, RegexReward

P2 = ["q1", "q2"]


def test_length_words_chars_and_target():
    comps = ["one two three", "  a  b "]
    assert LengthReward()(P2, comps) == [3.0, 2.0]
    assert LengthReward(unit="chars")(P2, comps) == [13.0, 7.0]
    # target 2 words: -|3 - 2| = -1, -|2 - 2| = 0
    assert LengthReward(target=2)(P2, comps) == [-1.0, 0.0]
    b = rm.create("brevity")
    # called (TRL) it is oriented, higher is better: -length; the raw length is still there
    assert b(P2, comps) == [-3.0, -2.0] and b.raw(P2, comps) == [3.0, 2.0] and b.higher_is_better is False


def test_length_rejects_bad_unit_and_target_with_lower_is_better():
    with pytest.raises(ValueError, match="unknown unit 'lines'"):
        LengthReward(unit="lines")
    with pytest.raises(ValueError, match="needs tokenizer="):
        LengthReward(unit="tokens")
    with pytest.raises(ValueError, match="higher-is-better"):
        LengthReward(target=3, higher_is_better=False)


def test_chat_message_completions_and_prompts():
    prompts = [[{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]] * 2
    comps = [[{"role": "assistant", "content": "hello there friend"}],
             [{"role": "assistant", "content": [{"type": "text", "text": "a b"}]}]]
    assert LengthReward()(prompts, comps) == [3.0, 2.0]
    seen = []
    f = CallableReward(lambda p, c: seen.append((p, c)) or 0.0, elementwise=True, name="probe")
    f(prompts, comps)
    assert seen[0] == ("hi", "hello there friend")  # last user message, joined completion text


def test_regex_modes_and_flags():
    comps = ["The answer is 42", "no number", "7 and 8"]
    p = ["", "", ""]
    assert RegexReward(r"\d+")(p, comps) == [1.0, 0.0, 1.0]
    assert RegexReward(r"\d+", mode="count")(p, comps) == [1.0, 0.0, 2.0]
    assert RegexReward(r"no number", mode="fullmatch")(p, comps) == [0.0, 1.0, 0.0]
    assert RegexReward(r"the ANSWER", flags=["IGNORECASE"])(p, comps) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="invalid pattern"):
        RegexReward("(")
    with pytest.raises(ValueError, match="unknown regex flags"):
        RegexReward("a", flags=["NOPE"])


def test_format_table():
    good = "<think>2+2</think> <answer>4</answer>"
    assert FormatReward()(["", ""], [good, "<answer>4</answer>"]) == [1.0, 0.0]
    assert FormatReward("json")(["", ""], ['{"a": 1}', "{a: 1}"]) == [1.0, 0.0]
    assert FormatReward("boxed")(["", ""], [r"so \boxed{12}", "12"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        FormatReward("xml")


def test_column_reward():
    col = ColumnReward("helpfulness")
    assert col(P2, ["a", "b"], helpfulness=[3, None], other=[0, 0]) == [3.0, None]
    with pytest.raises(ValueError, match="column 'helpfulness' is not among the columns passed"):
        col(P2, ["a", "b"], other=[1, 2])
    with pytest.raises(ValueError, match="one value per completion"):
        col(P2, ["a", "b"], helpfulness=[1])
    with pytest.raises(ValueError, match="expected a float or None"):
        col(P2, ["a", "b"], helpfulness=["x", 1])


def test_callable_batch_contract_and_name():
    def my_reward(prompts, completions, **kw):
        return [float(len(c)) + kw["bonus"][i] for i, c in enumerate(completions)]

    f = CallableReward(my_reward)
    assert f.__name__ == "my_reward" == f.name
    assert f(P2, ["ab", "c"], bonus=[1, 0]) == [3.0, 1.0]
    with pytest.raises(ValueError, match="must be callable"):
        CallableReward(3)


@pytest.mark.parametrize(
    "prompts, completions, match",
    [
        ([], [], "empty list of completions"),
        (["a"], ["x", "y"], "1 prompts but 2 completions"),
        (["a", "b"], ["x", 3], "completion 1 is a int"),
        (["a"], [[{"role": "assistant"}]], "completion 0 is a list"),
        ("ab", ["x", "y"], "prompts must be a list"),
    ],
)
def test_bad_input_names_the_model(prompts, completions, match):
    with pytest.raises(ValueError, match=match) as info:
        LengthReward(name="len")(prompts, completions)
    assert "'len'" in str(info.value)


def test_instances_are_trl_reward_functions():
    from trl.trainer.utils import get_callable_name

    for model in (LengthReward(), RegexReward("x", name="has_x"), FormatReward()):
        assert get_callable_name(model) == model.name
