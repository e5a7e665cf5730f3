"""Offline multi-reward dominance trainer (DESIGN.md §3.3) on the global batch.

Data: prompts with ``K >= 2`` candidate responses and a reward vector per response, either from
dataset columns (``rewards``: ``K`` lists of ``d`` floats, or ``reward_columns``: ``d`` columns of
``K`` floats each, e.g. HelpSteer2-style attributes) or scored once by a reward bank
(:class:`reward_models.bank.RewardBank`). The loss is
:func:`multidom.objectives.offline.offline_dominance_loss` with any estimator; the global-batch
machinery is :class:`multidom.trainers.global_batch.GlobalBatchTrainer`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from multidom.core.estimators import ESTIMATORS
from multidom.core.spec import DominanceSpec
from multidom.lm.tokenize import check_columns, tokenize_example
from multidom.objectives.offline import OFFLINE_SPEC, offline_dominance_loss
from multidom.trainers.global_batch import GlobalBatchConfig, GlobalBatchTrainer
from multidom.trainers.spec_field import WithDominanceSpec

__all__ = ["OfflineDominanceConfig", "OfflineDominanceTrainer", "prepare_offline_dataset", "score_with_bank",
           "check_reward_columns"]

logger = logging.getLogger(__name__)


@dataclass
class OfflineDominanceConfig(WithDominanceSpec, GlobalBatchConfig):
    """Hyperparameters of :class:`OfflineDominanceTrainer` (plus every ``TrainingArguments`` field)."""

    beta: float = field(
        default=1.0,
        metadata={"help": "DPO temperature: the policy's candidate weights are softmax_k(beta * logratio)."},
    )
    dominance: Any = field(
        default=OFFLINE_SPEC,
        metadata={"help": "What D(P >= Q) means: a DominanceSpec or its mapping (default: sinkhorn, logistic "
                          "cost, z-scored rewards; sinkhorn is smooth at the start, where both clouds coincide)."},
    )
    attribute_names: list = field(
        default_factory=list,
        metadata={"help": "Names of the d reward attributes, used in the metric names rewards/<name>/policy_mean "
                          "(set by the run recipe from the bank or the reward columns)."},
    )

    def __post_init__(self):
        super().__post_init__()
        self.dominance = DominanceSpec.from_mapping(self.dominance, "dominance", **OFFLINE_SPEC.to_dict())
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not self.beta > 0:
            raise ValueError(f"beta must be a number > 0, got {self.beta!r}")



def _rewards_of(row: dict, idx: int, k: int, rewards_column: str | None, reward_columns: Sequence[str]) -> list:
    if rewards_column is not None:
        r = row[rewards_column]
        if not isinstance(r, (list, tuple)) or len(r) != k:
            raise ValueError(f"row {idx}: column {rewards_column!r} must hold one reward vector per candidate ({k})")
        return [[float(x) for x in (v if isinstance(v, (list, tuple)) else [v])] for v in r]
    cols = []
    for name in reward_columns:
        v = row[name]
        if not isinstance(v, (list, tuple)) or len(v) != k:
            raise ValueError(f"row {idx}: reward column {name!r} must hold one value per candidate ({k})")
        cols.append([float(x) for x in v])
    return [list(t) for t in zip(*cols)]


def prepare_offline_dataset(dataset, tokenizer, *, max_length: int | None, completions_column: str = "completions",
                            rewards_column: str | None = "rewards", reward_columns: Sequence[str] = ()):
    """Tokenise ``prompt`` + ``K`` candidates and attach ``rewards`` ``(K, d)`` to every row.

    Raises ``ValueError`` for missing columns, ``K < 2``, rows whose ``K`` differs from the first
    row's, reward vectors of the wrong length or of differing ``d``, and the per-row errors of
    :func:`multidom.lm.tokenize.tokenize_example`.
    """
    if reward_columns:
        rewards_column = None
    required = ["prompt", completions_column] + ([rewards_column] if rewards_column else list(reward_columns))
    check_columns(dataset.column_names, required, "offline")
    k = len(dataset[0][completions_column])
    if k < 2:
        raise ValueError(f"offline dominance needs K >= 2 candidates per prompt; row 0 has K = {k}")

    def fn(row, idx):
        comps = row[completions_column]
        if len(comps) != k:
            raise ValueError(f"row {idx}: {len(comps)} candidates, but row 0 has {k}; every prompt needs the same K")
        rewards = _rewards_of(row, idx, k, rewards_column, reward_columns)
        d = {len(r) for r in rewards}
        if len(d) != 1 or 0 in d:
            raise ValueError(f"row {idx}: reward vectors must all have the same d >= 1, got lengths {sorted(d)}")
        out = tokenize_example(tokenizer, row["prompt"], comps, max_length=max_length, row=idx)
        out["rewards"] = rewards
        return out

    out = dataset.map(fn, with_indices=True)
    dims = {len(r[0]) for r in out["rewards"]}
    if len(dims) != 1:
        raise ValueError(f"reward vectors differ in length across rows: {sorted(dims)}")
    return out


def check_reward_columns(dataset, what: str, *, completions_column: str = "completions",
                         rewards_column: str | None = "rewards", reward_columns: Sequence[str] = ()) -> None:
    """Check every row's rewards before training: one finite number per candidate and attribute.

    Raises ``ValueError`` naming the set, the row and the column (a ``None``, a string, a NaN, a list
    of the wrong length), so a bad row fails before the first step, not after checkpoints.
    """
    if reward_columns:
        rewards_column = None
    required = ["prompt", completions_column] + ([rewards_column] if rewards_column else list(reward_columns))
    check_columns(dataset.column_names, required, f"offline ({what})")
    comps = dataset[completions_column]
    columns = {c: dataset[c] for c in ([rewards_column] if rewards_column else reward_columns)}
    for i, cands in enumerate(comps):
        k = len(cands) if isinstance(cands, list) else -1
        for name, values in columns.items():
            v = values[i]
            items = v if isinstance(v, list) else None
            if items is None or len(items) != k:
                raise ValueError(f"{what}: row {i}: column {name!r} must hold one reward per candidate ({k}), got {v!r}")
            flat = [x for item in items for x in (item if isinstance(item, list) else [item])]
            bad = next((x for x in flat if isinstance(x, bool) or not isinstance(x, (int, float))
                        or not math.isfinite(x)), "ok")
            if bad != "ok":
                raise ValueError(f"{what}: row {i}: column {name!r} holds {bad!r}; every reward must be a finite number")


def score_with_bank(dataset, bank, *, completions_column: str = "completions"):
    """Add a ``rewards`` column ``(K, d)`` scored by a ``RewardBank`` (raw, oriented scores).

    Rows with a masked score (a model returned ``None``/NaN) are dropped and counted in the log.
    """
    check_columns(dataset.column_names, ["prompt", completions_column], "offline")
    prompts = [p for p, comps in zip(dataset["prompt"], dataset[completions_column]) for _ in comps]
    flat = [c for comps in dataset[completions_column] for c in comps]
    scores = bank.score(prompts, flat, normalized=False)
    sizes = [len(c) for c in dataset[completions_column]]
    rows = scores.raw.split(sizes)
    keep = [i for i, r in enumerate(rows) if torch.isfinite(r).all()]
    if len(keep) < len(rows):
        logger.warning("reward bank: dropped %d of %d prompts with a masked score", len(rows) - len(keep), len(rows))
    dataset = dataset.select(keep)
    return dataset.add_column("rewards", [rows[i].tolist() for i in keep]), list(scores.names)


class OfflineDominanceTrainer(GlobalBatchTrainer):
    """Offline multi-reward dominance (DESIGN.md §3.3) with the violation on the global batch.

    Logged metrics: ``dominance/<estimator>/violation``, ``dominance/<estimator>/eps``,
    ``kl`` (mean ``KL(w_i || uniform)`` over prompts), ``rewards/<attribute>/policy_mean``.
    """

    extra_keys = ("rewards",)

    def __init__(self, model, args: OfflineDominanceConfig, *, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs: Any):
        self._tokenizer, self._prep_args = processing_class, args
        train_dataset, eval_dataset = self.prepare_dataset(train_dataset), self.prepare_dataset(eval_dataset)
        if train_dataset is None:
            raise ValueError("OfflineDominanceTrainer needs a train_dataset")
        self.n_per_example = len(train_dataset[0]["completion_ids"])
        super().__init__(model, args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)

    def prepare_dataset(self, dataset):
        """Tokenise raw rows with :func:`prepare_offline_dataset` (already tokenised data passes through)."""
        if dataset is None or "completion_ids" in dataset.column_names:
            return dataset
        return prepare_offline_dataset(dataset, self._tokenizer, max_length=self._prep_args.max_length)

    def objective(self, logps, ref_logps, extras):
        a = self.args
        spec = a.dominance
        overrides = {}
        if "seed" in ESTIMATORS[spec.estimator].options and "seed" not in spec.options:
            # fresh sliced directions every step, the same on every process
            overrides["seed"] = int(self.state.global_step) if self.state is not None else 0
        loss, stats = offline_dominance_loss(logps - ref_logps, extras["rewards"], beta=a.beta, spec=spec, **overrides)
        d = extras["rewards"].shape[-1]
        names = list(a.attribute_names) if len(a.attribute_names) == d else [f"attr{j}" for j in range(d)]
        out = {f"dominance/{spec.estimator}/violation": loss.detach(),
               f"dominance/{spec.estimator}/eps": stats["eps"], "kl": stats["kl"]}
        out.update({f"rewards/{n}/policy_mean": stats["policy_reward_mean"][j] for j, n in enumerate(names)})
        return loss, out
