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
from tqdm.auto import tqdm

__all__ = ["Scorer", "as_bank", "sample_completions", "score_rows", "prompt_key", "add_baseline_column", "RollingBuffer"]


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


@torch.no_grad()
def sample_completions(
    model: Any, tokenizer: Any, prompts: Sequence[Any], n: int, *, max_new_tokens: int,
    temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, batch_size: int = 16,
    progress: bool = False, desc: str = "sampling",
) -> tuple[list[list[Any]], list[list[list[int]]]]:
    """Sample ``n`` completions per prompt with ``model.generate`` (the reference policy).

    Conversational prompts go through the chat template and come back as
    ``[{"role": "assistant", "content": text}]``, as TRL passes them to reward functions.
    ``progress`` shows a tqdm bar (labelled ``desc``) counting completions.
    Returns ``(completions[i][k], completion_ids[i][k])``.
    """
    conversational = bool(prompts) and not isinstance(prompts[0], str)
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if conversational else p
        for p in prompts
    ]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    outs: list[list[Any]] = [[] for _ in prompts]
    ids_out: list[list[list[int]]] = [[] for _ in prompts]
    flat = [i for i in range(len(prompts)) for _ in range(n)]
    bar = tqdm(total=len(flat), desc=desc, unit="completion", disable=not progress)
    try:
        for start in range(0, len(flat), batch_size):
            rows = flat[start:start + batch_size]
            enc = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            gen = model.generate(
                **enc, do_sample=True, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                top_k=top_k or None, pad_token_id=tokenizer.pad_token_id,
            )
            for row, seq in zip(rows, gen[:, enc["input_ids"].shape[1]:].tolist()):
                if tokenizer.eos_token_id in seq:  # keep the EOS, as TRL does, drop what follows
                    seq = seq[: seq.index(tokenizer.eos_token_id) + 1]
                seq = [t for t in seq if t != tokenizer.pad_token_id or t == tokenizer.eos_token_id]
                text = tokenizer.decode(seq, skip_special_tokens=True)
                outs[row].append([{"role": "assistant", "content": text}] if conversational else text)
                ids_out[row].append(seq)
            bar.update(len(rows))
    finally:
        bar.close()
        tokenizer.padding_side = side
        model.train(was_training)
    return outs, ids_out


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
            comps, ids = sample_completions(
                model, tokenizer, sub_prompts, config.baseline_samples,
                max_new_tokens=config.max_completion_length, temperature=config.temperature,
                top_p=config.top_p, top_k=config.top_k or 0,
                progress=not getattr(config, "disable_tqdm", False), desc="baseline cloud",
            )
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
