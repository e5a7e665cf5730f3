"""The reward-model contract (DESIGN.md §4) and the text helpers every reward model shares.

A reward model is a callable ``(prompts, completions, **columns) -> list[float | None]`` -- exactly the
reward-function contract of TRL's trainers (``GRPOTrainer(reward_funcs=[...])``), so any multidom reward
model can be handed to TRL as is: TRL reads its ``__name__`` and turns ``None`` into NaN.

**Orientation travels with the call** (DESIGN.md §8). Calling a model returns its score oriented so that
higher is better, whatever ``higher_is_better`` says: a lower-is-better model (``brevity``, a toxicity
classifier, ``higher_is_better=False``) returns ``-raw``. TRL, and anything else outside the bank, ignores
orientation flags, so that is the only safe thing for ``__call__`` to return: handed to ``GRPOTrainer``,
``brevity`` rewards *shorter* answers. The raw score stays available as :meth:`RewardModel.raw` (one
attribute) and :meth:`RewardModel.score` (every attribute); the bank reads ``score`` and orients by
``higher_is_better`` itself, so bank values are unchanged.

Subclasses implement :meth:`RewardModel.raw` (or :meth:`RewardModel.score` for several attributes). A
subclass written against the first version, which implements ``__call__`` with the raw score, keeps
working: :meth:`RewardModel.__init_subclass__` adopts that method as its ``raw`` and gives the class the
oriented ``__call__``.

* ``prompts``: ``n`` strings, or ``n`` chat conversations (lists of ``{"role": ..., "content": ...}``).
* ``completions``: ``n`` strings, or ``n`` lists of messages (TRL's conversational format).
* ``columns``: the dataset's other columns, lists of length ``n`` (or scalars such as TRL's
  ``trainer_state``); a model ignores the ones it does not use.

Beyond TRL's contract a model carries ``name``, ``higher_is_better`` (the bank flips ``False`` so that every
attribute of a reward cloud is higher-is-better), ``description`` and ``version``.

Multi-attribute models (a reward model with several heads, HelpSteer-style) set ``labels`` to ``k`` names and
implement :meth:`RewardModel.score`, returning ``n`` rows of ``k`` values; the bank expands them into ``k``
attributes named ``<name>/<label>``. Such a model is not a TRL reward function itself (TRL wants one number per
completion); :meth:`RewardModel.split` gives one single-attribute view per head for that.
"""
from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Message = Mapping[str, Any]
Text = str | Sequence[Message]
Score = float | None

__all__ = [
    "RewardModel",
    "HeadView",
    "check_batch",
    "completion_text",
    "prompt_text",
    "as_messages",
    "text_key",
    "to_float",
    "slice_columns",
    "require",
]


def require(module: str, package: str) -> Any:
    """Import an optional dependency, or fail with the exact ``pip install`` that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this reward model needs the optional package {package!r}; install it with "
            f"`pip install 'multidom[rewards]'` (or `pip install {package}`)"
        ) from err


def _content_text(content: Any, where: str) -> str:
    """The text of one message's ``content``: a string, or a list of parts (``{"type": "text", "text": ...}``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    raise ValueError(f"{where}: message content must be a string or a list of text parts, got {type(content).__name__}")


def _check_text(x: Any, where: str) -> None:
    if isinstance(x, str):
        return
    if isinstance(x, Sequence) and not isinstance(x, bytes) and all(
        isinstance(m, Mapping) and "content" in m for m in x
    ):
        return
    raise ValueError(
        f"{where} is a {type(x).__name__}; expected a string or a list of chat messages "
        "[{'role': ..., 'content': ...}]"
    )


def as_messages(x: Text, role: str) -> list[dict[str, Any]]:
    """A string becomes one message with ``role``; a message list is copied as is."""
    if isinstance(x, str):
        return [{"role": role, "content": x}]
    return [dict(m) for m in x]


def completion_text(x: Text, where: str = "completion") -> str:
    """Plain text of a completion: the string itself, or the contents of its messages joined by newlines."""
    if isinstance(x, str):
        return x
    return "\n".join(_content_text(m.get("content"), where) for m in x)


def prompt_text(x: Text, where: str = "prompt") -> str:
    """Plain text of a prompt: the string itself, or the content of the last ``user`` message (all if none)."""
    if isinstance(x, str):
        return x
    users = [m for m in x if m.get("role") == "user"]
    if users:
        return _content_text(users[-1].get("content"), where)
    return "\n".join(_content_text(m.get("content"), where) for m in x)


def text_key(x: Text) -> str:
    """A stable, hashable key for a prompt or completion (cache key; chat lists serialised as sorted JSON)."""
    if isinstance(x, str):
        return x
    return json.dumps([dict(m) for m in x], sort_keys=True, default=str)


def check_batch(who: str, prompts: Any, completions: Any) -> int:
    """Validate one call's inputs; return ``n``. Errors name ``who`` (the model or the bank) and the problem."""
    for label, seq in (("prompts", prompts), ("completions", completions)):
        if isinstance(seq, str) or not isinstance(seq, Sequence):
            raise ValueError(f"{who}: {label} must be a list, got {type(seq).__name__}")
    if len(completions) == 0:
        raise ValueError(f"{who}: got an empty list of completions")
    if len(prompts) != len(completions):
        raise ValueError(
            f"{who}: {len(prompts)} prompts but {len(completions)} completions (need one prompt per completion)"
        )
    for i, (p, c) in enumerate(zip(prompts, completions)):
        _check_text(p, f"{who}: prompt {i}")
        _check_text(c, f"{who}: completion {i}")
    return len(completions)


def to_float(value: Any, who: str, index: int) -> float:
    """One returned score as a float; ``None`` and NaN become NaN. Anything else non-numeric is an error."""
    if value is None:
        return math.nan
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"{who}: score {index} is a {type(value).__name__} ({value!r:.60}); expected a float or None")


def slice_columns(columns: Mapping[str, Any], n: int, idx: Sequence[int]) -> dict[str, Any]:
    """Columns for the rows ``idx``: per-row lists (length ``n``) are indexed, anything else passes unchanged."""
    out = {}
    for key, val in columns.items():
        if isinstance(val, Sequence) and not isinstance(val, str) and len(val) == n:
            out[key] = [val[i] for i in idx]
        else:
            out[key] = val
    return out


class RewardModel:
    """Base class of multidom reward models (the TRL reward-function contract plus metadata).

    Subclasses implement ``raw(prompts, completions, **columns) -> list[float | None]`` (one attribute, the
    model's natural score), or set ``labels`` and implement ``score`` (``k`` attributes, raw). Calling the model
    gives the **oriented** score (``-raw`` when ``higher_is_better`` is false; module docstring). ``cacheable``
    says whether a score depends only on the (prompt, completion) text, so the bank may cache it by that key.
    """

    labels: tuple[str, ...] = ()
    cacheable: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Adopt a subclass's own ``__call__`` (the first version's contract: the raw score) as its ``raw``,
        and give it the oriented ``__call__`` of this base class."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__call__")
        if own is not None and own is not RewardModel.__call__:
            if "raw" not in cls.__dict__:
                cls.raw = own
            cls.__call__ = RewardModel.__call__

    def __init__(
        self,
        name: str,
        *,
        higher_is_better: bool = True,
        description: str = "",
        version: str = "1",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a reward model needs a non-empty string name, got {name!r}")
        self.name = name
        self.__name__ = name  # TRL names reward columns after `__name__`
        self.higher_is_better = bool(higher_is_better)
        self.description = description
        self.version = version

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """Names of the attributes this model produces: ``(name,)``, or ``name/label`` for each label."""
        if not self.labels:
            return (self.name,)
        return tuple(f"{self.name}/{label}" for label in self.labels)

    @property
    def sign(self) -> float:
        """``+1.0`` when higher is better, else ``-1.0``: oriented score = ``sign * raw``."""
        return 1.0 if self.higher_is_better else -1.0

    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        """The oriented score, higher is better: :meth:`raw`, negated when ``higher_is_better`` is false
        (``None`` stays ``None``). This is what TRL's trainers receive."""
        if self.labels:
            raise TypeError(
                f"reward model {self.name!r} has {len(self.labels)} attributes {list(self.labels)}; "
                "score it through a RewardBank, or pass model.split() to TRL (one reward function per head)"
            )
        scores = self.raw(prompts, completions, **columns)
        if self.higher_is_better:
            return scores
        who = f"reward model {self.name!r}"
        return [None if v is None else -to_float(v, who, i) for i, v in enumerate(scores)]

    def raw(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        """The raw score of one attribute, in the model's own orientation (``higher_is_better`` says which)."""
        if self.labels:
            raise TypeError(f"reward model {self.name!r} has several attributes: use score() for their raw values")
        raise NotImplementedError(f"{type(self).__name__} must implement raw (or score, for several attributes)")

    def score(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Sequence[Score]]:
        """``n`` rows of ``len(attribute_names)`` **raw** scores (``None`` where a sample has no score); the
        bank orients them by ``higher_is_better``."""
        return [[s] for s in self.raw(prompts, completions, **columns)]

    def split(self) -> list[RewardModel]:
        """One single-attribute reward model per attribute (itself when there is only one)."""
        if not self.labels:
            return [self]
        return [HeadView(self, j) for j in range(len(self.labels))]

    def __repr__(self) -> str:
        arrow = "higher" if self.higher_is_better else "lower"
        return f"{type(self).__name__}(name={self.name!r}, {arrow} is better)"


class HeadView(RewardModel):
    """Attribute ``j`` of a multi-attribute model, as a TRL-compatible single reward function (called, it
    returns the oriented score of that head; :meth:`raw` the head's raw value)."""

    def __init__(self, parent: RewardModel, j: int) -> None:
        super().__init__(
            parent.attribute_names[j],
            higher_is_better=parent.higher_is_better,
            description=parent.description,
            version=parent.version,
        )
        self.parent = parent
        self.j = j
        self.cacheable = parent.cacheable

    def raw(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        # TRL calls the views one after the other on the same batch: score it once (one-entry memo on the parent;
        # only for cacheable parents, whose scores depend on the text alone).
        key = tuple(text_key(p) + "\0" + text_key(c) for p, c in zip(prompts, completions))
        memo = getattr(self.parent, "_split_memo", None)
        if not self.parent.cacheable or memo is None or memo[0] != key:
            memo = (key, self.parent.score(prompts, completions, **columns))
            if self.parent.cacheable:
                self.parent._split_memo = memo
        return [row[self.j] for row in memo[1]]


def function_name(fn: Callable[..., Any]) -> str:
    """Display name of a user function (unwrapping ``functools.partial``), as TRL names it."""
    import functools

    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)
