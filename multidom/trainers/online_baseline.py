"""Scoring and the baseline (negative) cloud of the online dominance trainer (DESIGN.md §3.2).

* :func:`as_bank` accepts a ``reward_models.RewardBank`` or a plain list of TRL-style reward callables
  and returns a :class:`Scorer` giving ``(n, d)`` reward vectors (NaN where a model returned None),
  every attribute oriented higher-is-better.
* :func:`add_baseline_column` computes, once before training, the baseline reward vectors of every
  prompt (reference-model completions, or the dataset's own responses) and stores them as a dataset
  column (a list of ``d``-vectors per row), so TRL hands them to the reward function with the batch.
  The baseline is data produced at scale (DESIGN.md §8): :func:`baseline_rows` splits the prompts over
  all ranks, each rank samples its share -- every prompt's completions seeded by the run seed and the
  prompt (:mod:`multidom.lm.seeded`), so the cloud does not depend on the number of processes or the
  batch size -- and scores it; the shares are merged so every rank holds the same cloud, and rank 0
  writes the cache (:mod:`multidom.trainers.baseline_cache`: keyed by model, sampling settings, samples,
  seed and reward-bank spec; rows per prompt; atomic). No rank waits on another's generation.
* :func:`sample_reference` is shard-safe: all ranks run the same number of ``generate`` calls (padding),
  as ZeRO-3 / FSDP forward passes are collectives; the baseline refresh uses it too.
* :class:`RollingBuffer` keeps the policy's recent clouds for ``baseline_source="buffer"``.
"""
from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from multidom.lm.generation import Sampling, generate, prompt_key
from multidom.trainers.baseline_cache import bank_spec, model_fingerprint, read_rows, shared_path, write_rows
from multidom.trainers.distributed import gather_objects, max_over_ranks, shard, world
from multidom.trainers.reference import gathered_for_generation

__all__ = ["Scorer", "as_bank", "score_rows", "prompt_key", "sample_reference", "baseline_key", "baseline_rows",
           "add_baseline_column", "RollingBuffer"]


class Scorer:
    """Uniform view of a reward bank: ``scorer(prompts, completions, **columns) -> (n, d)`` float32.

    Attributes:
        names: the ``d`` attribute names.
        spec: a JSON-able description of the bank (part of the baseline cache key).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], names: Sequence[str], spec: Any = None):
        self._fn = fn
        self.names = list(names)
        self.spec = spec if spec is not None else bank_spec(fn)
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

    return Scorer(score, list(names), bank_spec(bank))


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


def baseline_batch(config: Any) -> int:
    """Prompts per ``generate`` call for the baseline: as many sequences as one training generation batch of this
    process (what training already fits in memory), at least 256 sequences' worth on the CPU."""
    g = int(config.baseline_samples)
    world_size = max(1, int(getattr(config, "world_size", 1) or 1))
    seqs = int(getattr(config, "generation_batch_size", 0) or config.per_device_train_batch_size) // world_size
    if str(getattr(config, "device", "cpu")).startswith("cpu"):
        seqs = max(seqs, 256)
    return max(1, seqs // g)


def sample_reference(model: Any, tokenizer: Any, prompts: list, config: Any, *, seed: int, progress: bool = False,
                     sync: bool = True) -> tuple[list[list[Any]], list[list[list[int]]]]:
    """``config.baseline_samples`` completions of ``model`` per prompt with the training's sampling settings
    (:meth:`multidom.lm.generation.Sampling.from_trl`), each prompt's completions seeded by ``seed`` and the
    prompt itself (the same whatever the batch or the process); returns ``(completions, completion_ids)``.

    ``sync=True`` (under ``torch.distributed``): every rank pads its prompts to the largest count over ranks,
    so all ranks run the same number of ``generate`` calls -- required when the forward pass is a collective
    (ZeRO-3, FSDP, synced generation); the padding's completions are dropped."""
    n = len(prompts)
    target = max_over_ranks(n) if sync else n
    if target == 0:
        return [], []
    padded = list(prompts) + [prompts[-1] if prompts else ""] * (target - n)
    with gathered_for_generation(model):
        gens = generate(model, tokenizer, padded, config.baseline_samples, sampling=Sampling.from_trl(config),
                        batch_size=baseline_batch(config), seed=seed, progress=progress, desc="baseline cloud",
                        per_prompt_seeds=True)
    return gens.completions[:n], [[t.tolist() for t in row] for row in gens.completion_ids[:n]]


def baseline_key(config: Any, scorer: Scorer, model: Any = None, engine: str = "hf") -> dict[str, Any]:
    """What the baseline points of a prompt depend on (the cache key, :mod:`multidom.trainers.baseline_cache`)."""
    key: dict[str, Any] = {"source": config.baseline_source, "bank": scorer.spec, "attributes": scorer.names}
    if config.baseline_source == "reference":
        key.update(model=model_fingerprint(model), engine=engine, sampling=Sampling.from_trl(config).key(),
                   samples=int(config.baseline_samples), seed=int(config.seed))
    else:
        key["response_column"] = config.baseline_response_column
    return key


def baseline_rows(dataset: Any, config: Any, scorer: Scorer, *, model: Any = None, tokenizer: Any = None,
                  cache_path: str | Path | None = None, progress: bool | None = None,
                  sampler: Callable[[list], tuple[list, list]] | None = None, engine: str = "hf") -> dict[str, list]:
    """The baseline points of every prompt of ``dataset``, ``{prompt key: [d-vector, ...]}``, the same on every
    rank: the prompts missing from the cache are split over the ranks (:func:`~multidom.trainers.distributed.shard`),
    each rank samples and scores its share, and the shares are merged; rank 0 writes the cache.

    ``sampler(prompts) -> (completions, completion_ids)`` replaces HF sampling (:func:`sample_reference`), e.g.
    vLLM (``engine="vllm"``, :mod:`multidom.lm.vllm_sampling`); ``engine`` enters the cache key."""
    source = config.baseline_source
    if source == "reference" and (model is None or tokenizer is None):
        raise ValueError("baseline_source='reference' needs the model and tokenizer")
    if source == "dataset" and config.baseline_response_column not in dataset.column_names:
        raise ValueError(f"baseline_source='dataset' but the dataset has no column {config.baseline_response_column!r} "
                         f"(columns: {', '.join(dataset.column_names)})")
    key = baseline_key(config, scorer, model, engine)
    rank, _ = world()
    shared = shared_path(key)
    own = read_rows(cache_path, key) if rank == 0 else {}
    cache = gather_objects({**read_rows(shared, key), **own} if rank == 0 else None)[0]  # one view for all ranks
    prompts = list(dataset["prompt"])
    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        first.setdefault(prompt_key(p), i)
    todo = [i for k, i in first.items() if k not in cache]
    if not todo:
        if rank == 0 and cache_path is not None and len(own) < len(cache):
            write_rows(cache_path, key, cache, world_size=world()[1])  # the run's own copy (resume, inspection)
        return cache
    mine = [todo[j] for j in shard(len(todo))[0]]
    if world()[1] > 1:
        print(f"multidom: baseline cloud: rank {rank}/{world()[1]} samples {len(mine)} of {len(todo)} prompts",
              flush=True)
    if sampler is None and source == "reference":
        show = (not getattr(config, "disable_tqdm", False)) if progress is None else progress

        def sampler(prompts: list) -> tuple[list, list]:
            return sample_reference(model, tokenizer, prompts, config, seed=int(config.seed),
                                    progress=show and world()[0] == 0)
    fresh = _baseline_points(dataset, mine, config, scorer, sampler)
    for part in gather_objects(fresh):
        cache.update(part)
    for path in (cache_path, shared) if rank == 0 else ():
        if path is not None:
            write_rows(path, key, cache, world_size=world()[1])
    return cache


def _baseline_points(dataset: Any, rows: list[int], config: Any, scorer: Scorer, sampler: Any) -> dict[str, list]:
    col = config.baseline_rewards_column
    sub = dataset.select(rows)
    prompts = list(sub["prompt"])
    other = {c: list(sub[c]) for c in sub.column_names if c not in ("prompt", col)}
    if config.baseline_source == "reference":
        comps, ids = sampler(prompts)
    else:  # "dataset"
        comps = [r if isinstance(r, list) and (not r or not isinstance(r[0], dict)) else [r]
                 for r in other.pop(config.baseline_response_column)]
        ids = None
    out = score_rows(scorer, prompts, comps, ids, other) if prompts else []
    return {prompt_key(p): [v for v in r if all(math.isfinite(x) for x in v)] for p, r in zip(prompts, out)}


def add_baseline_column(
    dataset: Any, config: Any, scorer: Scorer, *, model: Any = None, tokenizer: Any = None,
    cache_path: str | Path | None = None,
) -> Any:
    """Return ``dataset`` with ``config.baseline_rewards_column`` filled for every row.

    ``baseline_source="reference"``: ``config.baseline_samples`` completions of ``model`` per prompt
    (GRPO's sampling settings, seeded per prompt, sampled by all ranks -- :func:`baseline_rows`);
    ``"dataset"``: the responses in ``config.baseline_response_column`` (a string or a list of strings per
    row); ``"column"``: the column must already exist (e.g. written by ``multidom baseline``); ``"buffer"``:
    nothing to add. Rows whose baseline points all come back masked keep an empty list (that prompt is
    skipped during training and counted in ``dominance/skipped_prompts``).
    """
    source, col = config.baseline_source, config.baseline_rewards_column
    if source == "buffer" or col in dataset.column_names:
        return dataset
    if source == "column":
        raise ValueError(f"baseline_source='column' but the dataset has no column {col!r} "
                         f"(columns: {', '.join(dataset.column_names)}); precompute it with `multidom baseline`")
    rows = baseline_rows(dataset, config, scorer, model=model, tokenizer=tokenizer, cache_path=cache_path)
    d = len(scorer.names)
    keys = [prompt_key(p) for p in dataset["prompt"]]
    for k in set(keys):
        bad = [v for v in rows[k] if len(v) != d]
        if bad:
            raise ValueError(f"cached baseline has {len(bad[0])} attributes but the reward bank has {d}; delete "
                             f"{cache_path} or change the bank")
    return dataset.add_column(col, [rows[k] for k in keys])


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
