"""``RewardBank``: stack ``d`` reward attributes into a reward cloud ``(n, d)`` (DESIGN.md §1, §4).

For completions ``y_1..y_n`` (with prompts ``x_1..x_n``) the bank returns ``R`` of shape ``(n, d)`` with
``R_ik = s_k * r_k(x_i, y_i)`` (``s_k = -1`` for a lower-is-better model, so every attribute is
higher-is-better), optionally normalised per attribute against a reference cloud (``zscore`` or ``cdf``;
both monotone, hence dominance-preserving -- :mod:`multidom.core.normalize`, the one normaliser of multidom).

* Batching: each model sees at most ``batch_size`` texts per call; duplicate (prompt, completion) pairs of a
  call are scored once.
* Caching: scores of cacheable models are kept by (model, prompt, completion), so re-scoring costs nothing.
* Masks: a ``None`` / NaN / infinite score masks that entry; ``BankScores.valid`` drops the samples with any
  masked attribute, and ``BankScores.dropped`` counts masked entries per attribute.
* Failures: a model that raises stops the run with the model's name and the (first) failing input -- a
  failing batch is retried item by item to find it -- unless ``on_error="skip"`` for that model, in which
  case the failing inputs are masked and logged. Returning the wrong number of scores is always an error.
"""
from __future__ import annotations

import inspect
import logging
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multidom.core.normalize import NORMALISATIONS, Normalizer
from reward_models.base import RewardModel, Text, check_batch, slice_columns, text_key, to_float
from reward_models.registry import create, get_factory
from reward_models.rules import CallableReward

__all__ = ["RewardBank", "BankScores"]

logger = logging.getLogger(__name__)

_ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class BankScores:
    """Scores of ``n`` completions on ``d`` attributes.

    Attributes:
        values: ``(n, d)`` oriented (higher is better) and, if the bank normalises, normalised; NaN where masked.
        raw: ``(n, d)`` oriented, not normalised; NaN where masked.
        mask: ``(n, d)`` bool, True where the entry is a finite score.
        names: the ``d`` attribute names (stable: model name, or ``<model>/<label>`` per head).
        dropped: attribute name -> number of masked entries in this call.
    """

    values: torch.Tensor
    raw: torch.Tensor
    mask: torch.Tensor
    names: tuple[str, ...]
    dropped: dict[str, int]

    @property
    def valid(self) -> torch.Tensor:
        """``(n,)`` bool: samples with every attribute present (the ones that enter a reward cloud)."""
        return self.mask.all(dim=1)

    def column(self, name: str) -> torch.Tensor:
        """``(n,)`` values of attribute ``name``."""
        if name not in self.names:
            raise KeyError(f"no attribute {name!r}; attributes: {list(self.names)}")
        return self.values[:, self.names.index(name)]


def _as_model(spec: Any, device: str | None) -> RewardModel:
    if isinstance(spec, RewardModel):
        return spec
    if isinstance(spec, (str, Mapping)):
        kind = spec if isinstance(spec, str) else spec.get("type")
        params = {}
        if device is not None and isinstance(kind, str) and "device" not in (spec if isinstance(spec, Mapping) else {}):
            if "device" in inspect.signature(get_factory(kind)).parameters:
                params["device"] = device
        return create(spec, **params)
    if callable(spec):  # a plain TRL-style reward function
        return CallableReward(spec)
    raise ValueError(f"RewardBank: cannot use {type(spec).__name__} as a reward model (name, mapping or callable)")


def _short(x: Text) -> str:
    s = x if isinstance(x, str) else text_key(x)
    return repr(s if len(s) <= 80 else s[:77] + "...")


class RewardBank:
    """Stack reward models into reward clouds ``(n, d)``; see the module docstring.

    Args:
        models: reward models, registry names, ``{type: ..., **params}`` specs, or plain TRL reward functions.
        batch_size: most texts per model call.
        normalisation: ``None``, ``"zscore"`` or ``"cdf"``; fitted with :meth:`fit_normalizer` or :meth:`load_stats`.
        on_error: ``"raise"`` or ``"skip"``, for every model or per model name (``{"relevance": "skip"}``; models
            not named raise). ``"skip"`` masks that attribute on the inputs where the model raised (logged as a
            warning; not cached, so they are retried next call); the other attributes are unaffected.
        cache: keep the scores of cacheable models by (prompt, completion).
        cache_size: most cached pairs per model (oldest evicted first).
        dtype: dtype of the returned tensors.
        device: device for the models the bank builds from names/specs (those whose factory takes ``device``,
            e.g. ``hf_classifier``, ``relevance``); built models keep their own. Scores come back on the CPU.
    """

    def __init__(
        self,
        models: Sequence[Any],
        *,
        batch_size: int = 64,
        normalisation: str | None = None,
        on_error: str | Mapping[str, str] = "raise",
        cache: bool = True,
        cache_size: int = 1_000_000,
        dtype: torch.dtype = torch.float32,
        device: str | None = None,
    ) -> None:
        if isinstance(models, (str, Mapping)) or not isinstance(models, Sequence) or len(models) == 0:
            raise ValueError("RewardBank needs a non-empty list of reward models")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"RewardBank: batch_size must be a positive int, got {batch_size!r}")
        if normalisation == "none":
            normalisation = None
        if normalisation is not None and normalisation not in NORMALISATIONS:
            raise ValueError(f"RewardBank: unknown normalisation={normalisation!r}; choose None or "
                             f"{', '.join(NORMALISATIONS)}")
        self.models = [_as_model(m, device) for m in models]
        self.names: tuple[str, ...] = tuple(a for m in self.models for a in m.attribute_names)
        dup = sorted({a for a in self.names if self.names.count(a) > 1})
        if dup:
            raise ValueError(f"RewardBank: duplicate attribute names {dup}; give the models distinct name=")
        self._on_error = self._check_on_error(on_error)
        self.batch_size, self.normalisation, self.cache, self.cache_size, self.dtype = (
            batch_size, normalisation, cache, cache_size, dtype,
        )
        self.sign = torch.tensor(
            [1.0 if m.higher_is_better else -1.0 for m in self.models for _ in m.attribute_names], dtype=torch.float64
        )
        self._caches: list[OrderedDict[tuple[str, str], tuple[float, ...]]] = [OrderedDict() for _ in self.models]
        self.calls: dict[str, int] = {m.name: 0 for m in self.models}  # model invocations, for inspection
        self.normalizer: Normalizer | None = None

    def _check_on_error(self, on_error: str | Mapping[str, str]) -> dict[str, str]:
        names = [m.name for m in self.models]
        table = dict(on_error) if isinstance(on_error, Mapping) else {n: on_error for n in names}
        unknown = sorted(set(table) - set(names))
        if unknown:
            raise ValueError(f"RewardBank: on_error names unknown models {unknown}; models: {names}")
        bad = {k: v for k, v in table.items() if v not in _ON_ERROR}
        if bad:
            raise ValueError(f"RewardBank: on_error must be one of {_ON_ERROR}, got {bad}")
        return {n: table.get(n, "raise") for n in names}

    def __repr__(self) -> str:
        return f"RewardBank({list(self.names)}, normalisation={self.normalisation!r})"

    # ---------------------------------------------------------------- scoring
    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> BankScores:
        """Score ``n`` completions -> :class:`BankScores` (values normalised when the bank normalises)."""
        return self.score(prompts, completions, **columns)

    def score(
        self, prompts: Sequence[Text], completions: Sequence[Text], *, normalized: bool = True, **columns: Any
    ) -> BankScores:
        """Like calling the bank; ``normalized=False`` skips normalisation (e.g. to score the reference cloud)."""
        n = check_batch(f"RewardBank{list(self.names)}", prompts, completions)
        keys = [(text_key(p), text_key(c)) for p, c in zip(prompts, completions)]
        blocks = [self._score_model(j, prompts, completions, columns, keys, n) for j in range(len(self.models))]
        raw = torch.cat(blocks, dim=1) * self.sign
        mask = torch.isfinite(raw)
        raw = torch.where(mask, raw, torch.full_like(raw, math.nan))
        dropped = {name: int((~mask[:, k]).sum()) for k, name in enumerate(self.names)}
        if any(dropped.values()):
            logger.info("reward bank masked entries per attribute: %s", {k: v for k, v in dropped.items() if v})
        values = raw
        if self.normalisation is not None and normalized:
            if self.normalizer is None:
                raise RuntimeError(
                    f"RewardBank(normalisation={self.normalisation!r}) is not fitted: call fit_normalizer(reference) or "
                    "load_stats(path) first, or score with normalized=False"
                )
            values = self.normalizer(raw)
        return BankScores(values.to(self.dtype), raw.to(self.dtype), mask, self.names, dropped)

    def _score_model(
        self, j: int, prompts: Sequence[Text], completions: Sequence[Text], columns: Mapping[str, Any],
        keys: list[tuple[str, str]], n: int,
    ) -> torch.Tensor:
        """``(n, k_j)`` float64 raw scores of model ``j`` (NaN where missing)."""
        model = self.models[j]
        use_cache = self.cache and model.cacheable
        cache = self._caches[j]
        missing = (math.nan,) * len(model.attribute_names)
        rows: list[tuple[float, ...]] = [missing] * n
        todo: dict[Any, list[int]] = {}  # one entry per distinct pair to score -> the rows that share it
        for i, key in enumerate(keys):
            if not use_cache:
                todo[i] = [i]  # every row is scored (the score may depend on other columns)
            elif key in cache:
                rows[i] = cache[key]
            else:
                todo.setdefault(key, []).append(i)
        first = [shared[0] for shared in todo.values()]
        for start in range(0, len(first), self.batch_size):
            idx = first[start:start + self.batch_size]
            for i, row in zip(idx, self._run(model, idx, prompts, completions, columns, n)):
                if row is None:  # the model raised on this input and the bank skips it: masked, not cached
                    continue
                rows[i] = row
                if use_cache:
                    cache[keys[i]] = row
                    if len(cache) > self.cache_size:
                        cache.popitem(last=False)
        for shared in todo.values():
            for i in shared[1:]:
                rows[i] = rows[shared[0]]
        return torch.tensor(rows, dtype=torch.float64)

    def _call(
        self, model: RewardModel, idx: list[int], prompts: Sequence[Text], completions: Sequence[Text],
        columns: Mapping[str, Any], n: int,
    ) -> list[Sequence[Any]]:
        self.calls[model.name] += 1
        return model.score([prompts[i] for i in idx], [completions[i] for i in idx], **slice_columns(columns, n, idx))

    def _check_rows(self, model: RewardModel, rows: Any, m: int) -> list[tuple[float, ...]]:
        who = f"reward model {model.name!r}"
        k = len(model.attribute_names)
        if not isinstance(rows, Sequence) and not hasattr(rows, "__len__"):
            raise ValueError(f"{who} returned a {type(rows).__name__}; expected a list of {m} scores")
        if len(rows) != m:
            raise ValueError(f"{who} returned {len(rows)} scores for {m} completions (need one per completion)")
        out = []
        for i, row in enumerate(rows):
            if len(row) != k:
                raise ValueError(f"{who} returned {len(row)} values for completion {i}; expected {k} ({model.labels})")
            out.append(tuple(to_float(v, who, i) for v in row))
        return out

    def _run(
        self, model: RewardModel, idx: list[int], prompts: Sequence[Text], completions: Sequence[Text],
        columns: Mapping[str, Any], n: int,
    ) -> list[tuple[float, ...] | None]:
        """Scores of rows ``idx`` (``None`` = failed and skipped); on an exception, retry one by one to name (or, if skipping, mask) the culprit."""
        try:
            rows = self._call(model, idx, prompts, completions, columns, n)
        except Exception as err:
            if len(idx) == 1:
                return [self._failed(model, idx[0], prompts, completions, err)]
            logger.info("reward model %r failed on a batch of %d; retrying item by item", model.name, len(idx))
            return [row for i in idx for row in self._run(model, [i], prompts, completions, columns, n)]
        return self._check_rows(model, rows, len(idx))

    def _failed(
        self, model: RewardModel, i: int, prompts: Sequence[Text], completions: Sequence[Text], err: Exception
    ) -> None:
        where = f"input {i} (prompt {_short(prompts[i])}, completion {_short(completions[i])})"
        if self._on_error[model.name] == "raise":
            raise RuntimeError(
                f"reward model {model.name!r} failed on {where}: {type(err).__name__}: {err} "
                f"(pass on_error={{{model.name!r}: 'skip'}} to mask such inputs instead)"
            ) from err
        logger.warning("reward model %r failed on %s, masked: %s: %s", model.name, where, type(err).__name__, err)
        return None

    # ---------------------------------------------------------------- normalisation
    def fit_normalizer(self, reference: torch.Tensor | BankScores) -> Normalizer:
        """Fit the bank's normalisation on a reference cloud: ``(m, d)`` oriented raw scores or a ``BankScores``
        (its ``raw``). NaN entries are ignored per attribute."""
        if self.normalisation is None:
            raise ValueError("RewardBank(normalisation=None) has nothing to fit; pass normalisation='zscore' or 'cdf'")
        values = reference.raw if isinstance(reference, BankScores) else torch.as_tensor(reference)
        self.normalizer = Normalizer.fit(self.normalisation, values, self.names)
        return self.normalizer

    def save_stats(self, path: str | Path) -> None:
        """Write the fitted normalisation statistics as JSON."""
        if self.normalizer is None:
            raise RuntimeError("RewardBank: no fitted normalisation to save (call fit_normalizer first)")
        self.normalizer.save(path)

    def load_stats(self, path: str | Path) -> Normalizer:
        """Read statistics written by :meth:`save_stats`; the method and attribute names must match the bank's."""
        norm = Normalizer.load(path)
        if norm.method != self.normalisation:
            raise ValueError(f"{path}: statistics for normalisation={norm.method!r}, the bank uses {self.normalisation!r}")
        if norm.names != self.names:
            raise ValueError(f"{path}: statistics for attributes {list(norm.names)}, the bank has {list(self.names)}")
        self.normalizer = norm
        return norm

    def clear_cache(self) -> None:
        for c in self._caches:
            c.clear()

