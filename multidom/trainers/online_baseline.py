"""Scoring and the baseline (negative) cloud of the online dominance trainer (DESIGN.md §3.2).

* :func:`as_bank` accepts a ``reward_models.RewardBank`` or a plain list of TRL-style reward callables
  and returns a :class:`Scorer` giving ``(n, d)`` reward vectors (NaN where a model returned None),
  every attribute oriented higher-is-better.
* :func:`add_baseline_column` computes, once before training, the baseline reward vectors of every
  prompt (reference-model completions, or the dataset's own responses) and stores them as a dataset
  column (a list of ``d``-vectors per row), so TRL hands them to the reward function with the batch.
  The column is cached in a JSON file keyed by prompt so a resumed run reuses the same baseline.
* :class:`RollingBuffer` keeps the policy's recent clouds for ``baseline_source="buffer"``.
"""
from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from multidom.lm.generation import Sampling, generate

__all__ = ["Scorer", "as_bank", "score_rows", "prompt_key", "sample_reference", "add_baseline_column",
           "RollingBuffer"]


class Scorer:
    """Uniform view of a reward bank: ``scorer(prompts, completions, **columns) -> (n, d)`` float32.

    Attributes:
        names: the ``d`` attribute names.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], names: Sequence[str]):
        self._fn = fn
        self.names = list(names)
        if not self.names:
            raise ValueError("the reward bank has no attributes; configure at least one reward model")

    def __call__(self, prompts: list, completions: list, **columns: Any) -> torch.Tensor:
        values = self._fn(prompts, completions, **columns)
        values = torch.as_tensor(values, dtype=torch.float32).reshape(len(completions), -1)
        if values.shape[1] != len(self.names):
            raise ValueError(f"the reward bank returned {values.shape[1]} attributes, expected {len(self.names)} "
                             f"({', '.join(self.names)})")
        return values


def as_bank(bank: Any) -> Scorer:
    """A :class:`Scorer` from a ``reward_models.RewardBank``, a list of reward models / specs / TRL reward
    callables (stacked into a ``RewardBank``), or a :class:`Scorer` (returned as is).

    A bank without attributes is a ``ValueError``."""
    if isinstance(bank, Scorer):
        return bank
    if isinstance(bank, (list, tuple)):
        if not bank:
            raise ValueError("the reward bank has no attributes; configure at least one reward model")
        from reward_models import RewardBank

        bank = RewardBank(list(bank))
    names = getattr(bank, "names", None)
    if names is None or not callable(bank):
        raise ValueError(f"cannot use {type(bank).__name__} as a reward bank: expected a RewardBank, a list of "
                         "reward functions, or a Scorer")

    def score(prompts, completions, **columns):
        out = bank(prompts, completions, **columns)
        # ``raw``: oriented but not normalised; the trainer normalises against the baseline itself.
        values = getattr(out, "raw", getattr(out, "values", out))
        return torch.as_tensor(values, dtype=torch.float32)

    return Scorer(score, list(names))


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def score_rows(scorer: Scorer, prompts, completions, completion_ids, columns) -> list[list[list[float]]]:
    """Score ``completions[i][k]`` of ``prompts[i]``; returns per row a list of ``d``-vectors."""
    flat_p, flat_c, flat_ids, idx = [], [], [], []
    for i, (p, cs) in enumerate(zip(prompts, completions)):
        for k, c in enumerate(cs):
            flat_p.append(p)
            flat_c.append(c)
            flat_ids.append(completion_ids[i][k] if completion_ids is not None else None)
            idx.append(i)
    cols = {key: [vals[i] for i in idx] for key, vals in columns.items()}
    if completion_ids is not None:
        cols["completion_ids"] = flat_ids
    values = scorer(flat_p, flat_c, **cols).tolist() if flat_c else []
    out: list[list[list[float]]] = [[] for _ in prompts]
    for i, v in zip(idx, values):
        out[i].append(v)
    return out


def sample_reference(model: Any, tokenizer: Any, prompts: list, config: Any, *, seed: int, progress: bool = False
                     ) -> tuple[list[list[Any]], list[list[list[int]]]]:
    """``config.baseline_samples`` completions of ``model`` per prompt with the training's sampling settings
    (:meth:`multidom.lm.generation.Sampling.from_trl`), seeded; returns ``(completions, completion_ids)``."""
    gens = generate(model, tokenizer, prompts, config.baseline_samples, sampling=Sampling.from_trl(config),
                    batch_size=max(1, 16 // config.baseline_samples), seed=seed, progress=progress,
                    desc="baseline cloud")
    return gens.completions, [[t.tolist() for t in row] for row in gens.completion_ids]


def add_baseline_column(
    dataset: Any, config: Any, scorer: Scorer, *, model: Any = None, tokenizer: Any = None,
    cache_path: str | Path | None = None,
) -> Any:
    """Return ``dataset`` with ``config.baseline_rewards_column`` filled for every row.

    ``baseline_source="reference"``: ``config.baseline_samples`` completions of ``model`` per prompt
    (GRPO's sampling settings); ``"dataset"``: the responses in ``config.baseline_response_column``
    (a string or a list of strings per row); ``"column"``: the column must already exist;
    ``"buffer"``: nothing to add. Rows whose baseline points all come back masked keep an empty
    list (that prompt is skipped during training and counted in ``dominance/skipped_prompts``).
    """
    source, col = config.baseline_source, config.baseline_rewards_column
    if source == "buffer":
        return dataset
    if col in dataset.column_names:
        return dataset
    if source == "column":
        raise ValueError(f"baseline_source='column' but the dataset has no column {col!r} "
                         f"(columns: {', '.join(dataset.column_names)})")
    cache = {}
    if cache_path is not None and Path(cache_path).is_file():
        cache = json.loads(Path(cache_path).read_text())
    prompts = list(dataset["prompt"])
    keys = [prompt_key(p) for p in prompts]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
    if todo:
        other = {c: [dataset[c][i] for i in todo] for c in dataset.column_names if c not in ("prompt", col)}
        sub_prompts = [prompts[i] for i in todo]
        if source == "reference":
            if model is None or tokenizer is None:
                raise ValueError("baseline_source='reference' needs the model and tokenizer")
            comps, ids = sample_reference(model, tokenizer, sub_prompts, config, seed=int(config.seed),
                                          progress=not getattr(config, "disable_tqdm", False))
        else:  # "dataset"
            rcol = config.baseline_response_column
            if rcol not in dataset.column_names:
                raise ValueError(f"baseline_source='dataset' but the dataset has no column {rcol!r} "
                                 f"(columns: {', '.join(dataset.column_names)})")
            comps = [r if isinstance(r, list) and (not r or not isinstance(r[0], dict)) else [r]
                     for r in other.pop(rcol)]
            ids = None
        rows = score_rows(scorer, sub_prompts, comps, ids, other)
        for i, r in zip(todo, rows):
            cache[keys[i]] = [v for v in r if all(math.isfinite(x) for x in v)]
        if cache_path is not None:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            Path(cache_path).write_text(json.dumps(cache))
    d = len(scorer.names)
    for k in set(keys):
        bad = [v for v in cache[k] if len(v) != d]
        if bad:
            raise ValueError(f"cached baseline has {len(bad[0])} attributes but the reward bank has {d}; delete "
                             f"{cache_path} or change the bank")
    return dataset.add_column(col, [cache[k] for k in keys])


class RollingBuffer:
    """The policy's valid reward vectors of the last ``steps`` generation batches, as one cloud."""

    def __init__(self, steps: int):
        self._chunks: deque[torch.Tensor] = deque(maxlen=steps)

    def cloud(self, d: int) -> torch.Tensor:
        """``(M, d)``; ``M = 0`` before the first push."""
        return torch.cat(list(self._chunks)) if self._chunks else torch.zeros(0, d)

    def push(self, points: torch.Tensor) -> None:
        if points.shape[0]:
            self._chunks.append(points.detach().cpu())
