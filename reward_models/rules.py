"""Rule-based reward models: ``column``, ``length`` / ``brevity``, ``regex``, ``format``, ``callable``.

Each is a :class:`~reward_models.base.RewardModel` (TRL reward-function contract) registered by name. Each
implements ``raw``; calling a model gives the oriented (higher-is-better) score, e.g. ``-length`` for
``brevity`` (:mod:`reward_models.base`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from reward_models.base import (
    RewardModel,
    Score,
    Text,
    check_batch,
    completion_text,
    function_name,
    prompt_text,
    to_float,
)
from reward_models.registry import register

__all__ = ["ColumnReward", "LengthReward", "RegexReward", "FormatReward", "CallableReward"]


@register("column", description="a dataset column used as the reward (offline data that already carries scores)")
class ColumnReward(RewardModel):
    """The reward is the dataset column ``column`` (one number or ``None`` per completion)."""

    cacheable = False  # the score is not a function of the text

    def __init__(self, column: str, *, name: str | None = None, higher_is_better: bool = True) -> None:
        super().__init__(name or column, higher_is_better=higher_is_better, description=f"dataset column {column!r}")
        self.column = column

    def raw(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        n = check_batch(f"reward model {self.name!r}", prompts, completions)
        if self.column not in columns:
            raise ValueError(
                f"reward model {self.name!r}: column {self.column!r} is not among the columns passed "
                f"({', '.join(sorted(columns)) or 'none'})"
            )
        values = columns[self.column]
        if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != n:
            raise ValueError(f"reward model {self.name!r}: column {self.column!r} must hold one value per completion")
        return [None if v is None else to_float(v, f"reward model {self.name!r}", i) for i, v in enumerate(values)]


def _count_words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def _count_chars(texts: list[str]) -> list[int]:
    return [len(t) for t in texts]


_UNITS: dict[str, Callable[[list[str]], list[int]]] = {"words": _count_words, "chars": _count_chars}


@register("length", description="completion length in words, characters or tokens; optional target -|len - target|")
class LengthReward(RewardModel):
    """Completion length ``L`` (``unit``: words, chars or tokens of ``tokenizer``).

    Without ``target`` the raw score is ``L``; set ``higher_is_better=False`` -- or use ``brevity`` -- to prefer
    short answers, and calling the model then returns ``-L`` (what TRL must see; :meth:`raw` still gives ``L``).
    With ``target`` the score is ``-|L - target|`` (0 at the target, higher is better).
    """

    def __init__(
        self,
        *,
        unit: str = "words",
        target: float | None = None,
        higher_is_better: bool = True,
        tokenizer: str | None = None,
        name: str = "length",
    ) -> None:
        super().__init__(name, higher_is_better=higher_is_better, description=f"length in {unit}")
        if unit == "tokens":
            if tokenizer is None:
                raise ValueError(f"reward model {name!r}: unit='tokens' needs tokenizer= (a local path or hub id)")
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer)
            self._count = self._count_tokens
        elif unit in _UNITS:
            self._count = _UNITS[unit]
        else:
            raise ValueError(f"reward model {name!r}: unknown unit {unit!r}; choose from words, chars, tokens")
        if target is not None and not higher_is_better:
            raise ValueError(f"reward model {name!r}: with a target the score -|L - target| is higher-is-better")
        self.unit, self.target = unit, target

    def _count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def raw(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        check_batch(f"reward model {self.name!r}", prompts, completions)
        lengths = self._count([completion_text(c) for c in completions])
        if self.target is None:
            return [float(n) for n in lengths]
        return [-abs(float(n) - self.target) for n in lengths]


@register("brevity", description="completion length, lower is better: called it returns -length (raw(): length)")
def brevity(*, unit: str = "words", tokenizer: str | None = None, name: str = "brevity") -> LengthReward:
    """Completion length, lower is better: calling it (TRL) returns ``-L``; ``raw`` and the bank's ``raw`` column
    hold ``L`` and ``-L`` respectively (the bank orients by ``higher_is_better``)."""
    return LengthReward(unit=unit, tokenizer=tokenizer, higher_is_better=False, name=name)


_FLAGS = {"IGNORECASE": re.IGNORECASE, "MULTILINE": re.MULTILINE, "DOTALL": re.DOTALL, "VERBOSE": re.VERBOSE}
_MODES: dict[str, Callable[[re.Pattern[str], str], float]] = {
    "search": lambda p, t: float(p.search(t) is not None),
    "fullmatch": lambda p, t: float(p.fullmatch(t) is not None),
    "count": lambda p, t: float(len(p.findall(t))),
}


@register("regex", description="1.0 if the completion matches a pattern (search / fullmatch), or the match count")
class RegexReward(RewardModel):
    """``mode="search"``/``"fullmatch"``: 1.0 on a match, 0.0 otherwise; ``mode="count"``: number of matches.

    ``flags`` are names from :mod:`re` (``IGNORECASE``, ``MULTILINE``, ``DOTALL``, ``VERBOSE``).
    """

    def __init__(
        self,
        pattern: str,
        *,
        mode: str = "search",
        flags: Sequence[str] = (),
        name: str = "regex",
        higher_is_better: bool = True,
    ) -> None:
        super().__init__(name, higher_is_better=higher_is_better, description=f"regex {mode} {pattern!r}")
        if mode not in _MODES:
            raise ValueError(f"reward model {name!r}: unknown mode {mode!r}; choose from {', '.join(_MODES)}")
        bad = [f for f in flags if f not in _FLAGS]
        if bad:
            raise ValueError(f"reward model {name!r}: unknown regex flags {bad}; choose from {', '.join(_FLAGS)}")
        bits = 0
        for f in flags:
            bits |= _FLAGS[f]
        try:
            self.pattern = re.compile(pattern, bits)
        except re.error as err:
            raise ValueError(f"reward model {name!r}: invalid pattern {pattern!r}: {err}") from None
        self._match = _MODES[mode]

    def raw(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        check_batch(f"reward model {self.name!r}", prompts, completions)
        return [self._match(self.pattern, completion_text(c)) for c in completions]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


_THINK_ANSWER = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_BOXED = re.compile(r"\\boxed\{[^{}]+\}")
_FORMATS: dict[str, Callable[[str], bool]] = {
    "think_answer": lambda t: _THINK_ANSWER.fullmatch(t) is not None,
    "json": _is_json,
    "boxed": lambda t: _BOXED.search(t) is not None,
}


@register("format", description="1.0 if the completion has a required format (think_answer, json, boxed)")
class FormatReward(RewardModel):
    """Format checks from a table: ``think_answer`` (``<think>..</think><answer>..</answer>``, the R1 format),
    ``json`` (parses as JSON), ``boxed`` (contains ``\\boxed{...}``). 1.0 when satisfied, else 0.0."""

    def __init__(self, format: str = "think_answer", *, name: str = "format") -> None:  # noqa: A002
        super().__init__(name, description=f"format {format!r}")
        if format not in _FORMATS:
            raise ValueError(f"reward model {name!r}: unknown format {format!r}; choose from {', '.join(_FORMATS)}")
        self._check = _FORMATS[format]

    def raw(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        check_batch(f"reward model {self.name!r}", prompts, completions)
        return [float(self._check(completion_text(c))) for c in completions]


@register("callable", description="wrap any Python function (TRL reward-function contract, or per item)")
class CallableReward(RewardModel):
    """Wrap a user function.

    * ``elementwise=False`` (default): ``fn(prompts, completions, **columns) -> list[float | None]`` -- the TRL
      contract; it receives the raw prompts/completions (strings or messages).
    * ``elementwise=True``: ``fn(prompt_text, completion_text) -> float | None``, called once per item.

    ``cacheable`` (default ``False``) tells the bank the score depends only on the text, so it may be cached.
    ``fn`` gives the raw score; with ``higher_is_better=False`` calling the wrapper returns ``-fn(...)``.
    Only Python callables are accepted (a config cannot name code to import; plug-ins use entry points).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        higher_is_better: bool = True,
        elementwise: bool = False,
        cacheable: bool = False,
        description: str = "",
    ) -> None:
        if not callable(fn):
            raise ValueError(f"reward model 'callable': fn must be callable, got {type(fn).__name__}")
        super().__init__(name or function_name(fn), higher_is_better=higher_is_better, description=description)
        self.fn, self.elementwise, self.cacheable = fn, elementwise, cacheable

    def raw(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        check_batch(f"reward model {self.name!r}", prompts, completions)
        if self.elementwise:
            return [self.fn(prompt_text(p), completion_text(c)) for p, c in zip(prompts, completions)]
        return list(self.fn(prompts, completions, **columns))
