"""RewardBank: stacking, orientation, masks, caching, batching, normalisation round-trip, error paths."""
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reward_models as rm
from reward_models import BankScores, RewardBank, RewardModel
from reward_models.rules import CallableReward, ColumnReward, LengthReward

PROMPTS = ["p0", "p1", "p2", "p3"]
COMPS = ["a", "a b c", "a b", "a b c d"]  # 1, 3, 2, 4 words


class Counting(RewardModel):
    """Number of characters; counts how many texts it was asked to score and in how many calls."""

    def __init__(self, name="chars", higher_is_better=True):
        super().__init__(name, higher_is_better=higher_is_better)
        self.seen, self.batches = 0, []

    def __call__(self, prompts, completions, **columns):
        self.seen += len(completions)
        self.batches.append(len(completions))
        return [float(len(c)) for c in completions]


class TwoHeads(RewardModel):
    labels = ("words", "chars")

    def __init__(self):
        super().__init__("two")

    def score(self, prompts, completions, **columns):
        return [[float(len(c.split())), float(len(c))] for c in completions]


def test_stack_orient_and_names():
    bank = RewardBank([LengthReward(), {"type": "brevity"}, TwoHeads()])
    s = bank(PROMPTS, COMPS)
    assert isinstance(s, BankScores)
    assert s.names == ("length", "brevity", "two/words", "two/chars")
    words = torch.tensor([1.0, 3.0, 2.0, 4.0])
    chars = torch.tensor([1.0, 5.0, 3.0, 7.0])
    torch.testing.assert_close(s.values, torch.stack([words, -words, words, chars], dim=1))
    assert s.values.shape == (4, 4) and s.values.dtype == torch.float32
    assert s.valid.all() and s.dropped == {n: 0 for n in s.names}
    torch.testing.assert_close(s.column("brevity"), -words)


def test_plain_function_and_duplicate_names():
    def shout(prompts, completions, **kw):
        return [float(c.count("!")) for c in completions]

    bank = RewardBank([shout])
    assert bank.names == ("shout",)
    assert bank(["x", "y"], ["hi!!", "no"]).values[:, 0].tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="duplicate attribute names \\['length'\\]"):
        RewardBank([LengthReward(), LengthReward(unit="chars")])


def test_none_and_nan_become_masks_and_are_counted():
    def spotty(prompts, completions, **kw):
        return [None, 1.0, float("nan"), 2.0]

    bank = RewardBank([LengthReward(), CallableReward(spotty)])
    s = bank(PROMPTS, COMPS)
    assert s.mask.tolist() == [[True, False], [True, True], [True, False], [True, True]]
    assert s.valid.tolist() == [False, True, False, True]
    assert s.dropped == {"length": 0, "spotty": 2}
    assert math.isnan(s.values[0, 1]) and s.values[3, 1] == 2.0


def test_cache_second_call_does_not_invoke_model_and_duplicates_scored_once():
    model = Counting()
    bank = RewardBank([model], batch_size=2)
    first = bank(PROMPTS + ["p0"], COMPS + ["a"])  # the last pair repeats the first
    assert model.seen == 4 and model.batches == [2, 2]
    again = bank(list(reversed(PROMPTS)), list(reversed(COMPS)))
    assert model.seen == 4  # nothing new scored
    torch.testing.assert_close(again.values, first.values[:4].flip(0))
    bank(["new"], ["a"])  # same completion, new prompt: a new key
    assert model.seen == 5
    uncached = RewardBank([Counting()], cache=False)
    uncached(PROMPTS, COMPS)
    uncached(PROMPTS, COMPS)
    assert uncached.models[0].seen == 8


def test_column_rewards_are_not_cached():
    bank = RewardBank([ColumnReward("score")])
    assert bank(["p"], ["c"], score=[1.0]).values.item() == 1.0
    assert bank(["p"], ["c"], score=[5.0]).values.item() == 5.0


def test_columns_are_sliced_per_batch():
    def plus_bonus(prompts, completions, bonus, trainer_state=None):
        assert len(bonus) == len(completions) and trainer_state == "state"
        return [float(b) for b in bonus]

    bank = RewardBank([CallableReward(plus_bonus)], batch_size=3)
    s = bank(PROMPTS, COMPS, bonus=[10, 11, 12, 13], trainer_state="state")
    assert s.values[:, 0].tolist() == [10.0, 11.0, 12.0, 13.0]


def test_zscore_and_cdf_hand_computed_and_round_trip(tmp_path):
    ref = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [float("nan"), 0.0]])
    bank = RewardBank([LengthReward(), {"type": "brevity"}], normalisation="zscore")
    with pytest.raises(RuntimeError, match="not fitted"):
        bank(PROMPTS, COMPS)
    bank.fit_normalizer(ref)
    # length: reference {1,2,3} -> mean 2, population std sqrt(2/3); brevity constant 0 -> std 1
    s = bank(PROMPTS, COMPS)
    words = torch.tensor([1.0, 3.0, 2.0, 4.0])
    torch.testing.assert_close(s.values[:, 0], (words - 2) / math.sqrt(2 / 3))
    torch.testing.assert_close(s.values[:, 1], -words)
    torch.testing.assert_close(s.raw[:, 0], words)
    path = tmp_path / "stats.json"
    bank.save_stats(path)
    assert json.loads(path.read_text())["method"] == "zscore"
    other = RewardBank([LengthReward(), {"type": "brevity"}], normalisation="zscore")
    other.load_stats(path)
    torch.testing.assert_close(other(PROMPTS, COMPS).values, s.values)

    cdf = RewardBank([LengthReward()], normalisation="cdf")
    cdf.fit_normalizer(torch.tensor([[1.0], [2.0], [2.0], [3.0]]))
    # mid-rank ECDF: x=1 -> (0+1)/8, x=3 -> (3+4)/8, x=2 -> (1+3)/8, x=4 -> (4+4)/8
    assert cdf(PROMPTS, COMPS).values[:, 0].tolist() == [1 / 8, 7 / 8, 4 / 8, 1.0]
    cdf.save_stats(tmp_path / "cdf.json")
    with pytest.raises(ValueError, match="the bank uses 'zscore'"):
        other.load_stats(tmp_path / "cdf.json")
    wrong = RewardBank([LengthReward(name="len")], normalisation="cdf")
    with pytest.raises(ValueError, match="attributes \\['length'\\], the bank has \\['len'\\]"):
        wrong.load_stats(tmp_path / "cdf.json")


def test_normalizer_fits_on_bank_scores_and_is_monotone():
    bank = RewardBank([LengthReward()], normalisation="cdf")
    bank.fit_normalizer(bank.score(PROMPTS, COMPS, normalized=False))
    v = bank(PROMPTS, COMPS).values[:, 0]
    words = torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert torch.equal(torch.argsort(v), torch.argsort(words))


def test_raising_model_names_model_and_input():
    def fragile(prompts, completions, **kw):
        if any("boom" in c for c in completions):
            raise ZeroDivisionError("bad text")
        return [1.0] * len(completions)

    bank = RewardBank([LengthReward(), CallableReward(fragile)], batch_size=4)
    comps = ["fine", "still fine", "boom here", "ok"]
    with pytest.raises(RuntimeError, match="reward model 'fragile' failed on input 2 .*'boom here'.*ZeroDivisionError"):
        bank(PROMPTS, comps)
    skip = RewardBank([LengthReward(), CallableReward(fragile)], batch_size=4, on_error={"fragile": "skip"})
    s = skip(PROMPTS, comps)
    assert s.mask[:, 1].tolist() == [True, True, False, True]
    assert s.dropped == {"length": 0, "fragile": 1}
    with pytest.raises(ValueError, match="on_error names unknown models \\['nope'\\]"):
        RewardBank([LengthReward()], on_error={"nope": "skip"})
    with pytest.raises(ValueError, match="on_error must be one of"):
        RewardBank([LengthReward()], on_error="ignore")


def test_skipped_failures_are_not_cached():
    calls = {"n": 0}

    def flaky(prompts, completions, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("transient")
        return [1.0] * len(completions)

    bank = RewardBank([CallableReward(flaky, cacheable=True)], on_error="skip")
    assert not bank(["p"], ["c"]).valid.item()
    assert bank(["p"], ["c"]).valid.item()


def test_wrong_number_of_scores_and_non_numeric_scores():
    short = CallableReward(lambda p, c, **kw: [1.0], name="short")
    with pytest.raises(ValueError, match="reward model 'short' returned 1 scores for 4 completions"):
        RewardBank([short], on_error="skip")(PROMPTS, COMPS)
    text = CallableReward(lambda p, c, **kw: ["high"] * len(c), name="text")
    with pytest.raises(ValueError, match="reward model 'text': score 0 is a str"):
        RewardBank([text])(PROMPTS, COMPS)


@pytest.mark.parametrize(
    "prompts, completions, match",
    [
        ([], [], "empty list of completions"),
        (["a"], ["x", "y"], "1 prompts but 2 completions"),
        (["a", "b"], ["x", None], "completion 1 is a NoneType"),
    ],
)
def test_bank_bad_input(prompts, completions, match):
    with pytest.raises(ValueError, match=match):
        RewardBank([LengthReward()])(prompts, completions)


def test_bank_bad_construction():
    with pytest.raises(ValueError, match="non-empty list"):
        RewardBank([])
    with pytest.raises(ValueError, match="unknown reward model 'lenght'; did you mean 'length'"):
        RewardBank(["lenght"])
    with pytest.raises(ValueError, match="unknown normalisation='rank'"):
        RewardBank([LengthReward()], normalisation="rank")
    with pytest.raises(ValueError, match="cannot use int"):
        RewardBank([3])


def test_trl_call_signature_and_extra_kwargs():
    """TRL's GRPOTrainer calls reward functions with these keywords; every model must accept and ignore them."""
    kwargs = {"completion_ids": [[1, 2], [3]], "trainer_state": object(), "log_extra": print, "log_metric": print}
    for spec in ("length", "brevity", {"type": "regex", "pattern": "a"}, {"type": "format", "format": "json"}):
        model = rm.create(spec)
        assert len(model(prompts=["p", "q"], completions=["a b", "c"], **kwargs)) == 2
    s = RewardBank(["length", CallableReward(lambda p, c, **kw: [float(len(kw["completion_ids"][i])) for i in
                                                               range(len(c))], name="ids")])
    assert s(["p", "q"], ["a b", "c"], **kwargs).values.tolist() == [[2.0, 2.0], [1.0, 1.0]]


def test_bank_passes_device_to_models_it_builds():
    from reward_models import registry

    seen = {}

    def factory(*, device: str = "default", name: str = "probe_device"):
        seen["device"] = device
        return LengthReward(name=name)

    rm.register("probe_device", replace=True)(factory)
    try:
        RewardBank(["probe_device", "length"], device="cpu")
        assert seen["device"] == "cpu"
        RewardBank([{"type": "probe_device", "device": "meta"}], device="cpu")
        assert seen["device"] == "meta"  # an explicit spec wins
    finally:
        registry._REGISTRY.pop("probe_device", None)


def test_split_views_share_one_scoring_pass():
    class CountingTwo(TwoHeads):
        calls = 0

        def score(self, prompts, completions, **columns):
            CountingTwo.calls += 1
            return super().score(prompts, completions, **columns)

    model = CountingTwo()
    words, chars = model.split()
    assert (words.__name__, chars.__name__) == ("two/words", "two/chars")
    assert words(PROMPTS, COMPS) == [1.0, 3.0, 2.0, 4.0] and chars(PROMPTS, COMPS) == [1.0, 5.0, 3.0, 7.0]
    assert CountingTwo.calls == 1
    words(PROMPTS[:2], COMPS[:2])
    assert CountingTwo.calls == 2
    with pytest.raises(TypeError, match="has 2 attributes"):
        model(PROMPTS, COMPS)
    assert LengthReward().split()[0].name == "length"


@settings(max_examples=40, deadline=None)
@given(
    ref=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=20),
    x=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=20),
    method=st.sampled_from(["zscore", "cdf"]),
)
def test_normalisation_is_monotone_so_dominance_is_preserved(ref, x, method):
    """Property: T is non-decreasing per attribute (x <= y => T(x) <= T(y)); the CDF lies in [0, 1]."""
    from reward_models import Normalizer

    norm = Normalizer.fit(method, torch.tensor(ref, dtype=torch.float64)[:, None], ["a"])
    xs = torch.tensor(sorted(x), dtype=torch.float64)[:, None]
    t = norm(xs)[:, 0]
    assert bool((t[1:] >= t[:-1]).all())
    if method == "cdf":
        assert bool(((t >= 0) & (t <= 1)).all())
