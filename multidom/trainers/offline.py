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
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from multidom.core.costs import COSTS
from multidom.objectives.offline import NORMALIZERS, offline_dominance_loss
from multidom.trainers.data import check_columns, tokenize_example
from multidom.trainers.global_batch import GlobalBatchConfig, GlobalBatchTrainer

__all__ = ["OfflineDominanceConfig", "OfflineDominanceTrainer", "prepare_offline_dataset", "score_with_bank",
           "run_from_config"]

logger = logging.getLogger(__name__)
ESTIMATORS = ("quantile", "sliced", "sinkhorn", "exact")


@dataclass
class OfflineDominanceConfig(GlobalBatchConfig):
    """Hyperparameters of :class:`OfflineDominanceTrainer` (plus every ``TrainingArguments`` field)."""

    beta: float = field(
        default=1.0,
        metadata={"help": "Softmax gain of the policy's candidate weights softmax_k(beta * logratio): the KL strength."},
    )
    estimator: str = field(
        default="sinkhorn",
        metadata={"help": f"Violation estimator, one of {', '.join(ESTIMATORS)} (sinkhorn: smooth at the start, "
                          "where the policy and reference clouds coincide)."},
    )
    cost: str = field(default="logistic", metadata={"help": f"Violation cost h, one of {', '.join(COSTS)}."})
    cost_beta: float = field(default=1.0, metadata={"help": "Gain of the logistic cost (on normalised rewards)."})
    margin: float = field(default=0.0, metadata={"help": "Margin m >= 0 added inside the cost."})
    normalize: str = field(
        default="zscore",
        metadata={"help": f"Per-attribute normalisation of the batch's rewards, one of {', '.join(NORMALIZERS)}."},
    )
    estimator_options: dict = field(
        default_factory=dict,
        metadata={"help": "Extra options for the estimator, e.g. {reg: 0.1} (sinkhorn) or {n_directions: 64} (sliced)."},
    )
    attribute_names: list = field(
        default_factory=list,
        metadata={"help": "Names of the d reward attributes, used in the metric names rewards/<name>/policy_mean."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if self.cost not in COSTS:
            raise ValueError(f"unknown cost {self.cost!r}; valid costs: {', '.join(COSTS)}")
        if self.normalize not in NORMALIZERS:
            raise ValueError(f"unknown normalize {self.normalize!r}; valid: {', '.join(NORMALIZERS)}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


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
    :func:`multidom.trainers.data.tokenize_example`.
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

    Logged metrics: ``dominance/<estimator>/violation``, ``dominance/<estimator>/violation_ratio``,
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
        self.estimator_name = args.estimator
        super().__init__(model, args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)

    def prepare_dataset(self, dataset):
        """Tokenise raw rows with :func:`prepare_offline_dataset` (already tokenised data passes through)."""
        if dataset is None or "completion_ids" in dataset.column_names:
            return dataset
        return prepare_offline_dataset(dataset, self._tokenizer, max_length=self._prep_args.max_length)

    def objective(self, logps, ref_logps, extras):
        a = self.args
        options = dict(a.estimator_options)
        if a.estimator == "sliced" and "seed" not in options:
            # fresh directions every step, the same on every process
            options["seed"] = int(self.state.global_step) if self.state is not None else 0
        loss, stats = offline_dominance_loss(
            logps - ref_logps, extras["rewards"], beta=a.beta, estimator=a.estimator, cost=a.cost,
            cost_beta=a.cost_beta, margin=a.margin, normalize=a.normalize, **options)
        d = extras["rewards"].shape[-1]
        names = list(a.attribute_names) if len(a.attribute_names) == d else [f"attr{j}" for j in range(d)]
        out = {f"dominance/{a.estimator}/violation": loss.detach(),
               f"dominance/{a.estimator}/violation_ratio": stats["violation_ratio"], "kl": stats["kl"]}
        out.update({f"rewards/{n}/policy_mean": stats["policy_reward_mean"][j] for j, n in enumerate(names)})
        return loss, out


def run_from_config(config: dict, *, output_dir: str, resume: bool = False) -> dict:
    """CLI runner (``trainer: offline``): sections ``model``, ``data``, ``training``.

    ``data``: ``train`` / ``eval`` datasets with ``prompt`` and ``completions_column`` (default
    ``completions``) plus either ``rewards_column`` (default ``rewards``) or ``reward_columns``;
    or ``reward_models``: a list of reward-bank specs that score the candidates once.
    """
    from multidom.trainers.runner import load_data, run_trainer

    def prepare(data_cfg: dict) -> dict:
        if "train" not in data_cfg:
            from multidom.config import ConfigError

            raise ConfigError("data section needs 'train'")
        sets = {"train": load_data(data_cfg["train"], "train")}
        if data_cfg.get("eval") is not None:
            sets["eval"] = load_data(data_cfg["eval"], "eval")
        col = data_cfg.get("completions_column", "completions")
        names: list = []
        if data_cfg.get("reward_models"):
            from reward_models.bank import RewardBank

            bank = RewardBank(list(data_cfg["reward_models"]))
            for key in list(sets):
                sets[key], names = score_with_bank(sets[key], bank, completions_column=col)
            rewards_column, reward_columns = "rewards", []
        else:
            reward_columns = list(data_cfg.get("reward_columns") or [])
            rewards_column = data_cfg.get("rewards_column", "rewards")
            names = reward_columns
        sets["_names"] = names
        sets["_prep"] = dict(completions_column=col, rewards_column=rewards_column, reward_columns=reward_columns)
        return sets

    def build(model, tokenizer, args, data, ref_model, peft_config, callbacks):
        if data["_names"] and not args.attribute_names:
            args.attribute_names = list(data["_names"])
        prepped = {k: prepare_offline_dataset(data[k], tokenizer, max_length=args.max_length, **data["_prep"])
                   for k in ("train", "eval") if k in data}
        return OfflineDominanceTrainer(model, args, train_dataset=prepped["train"], eval_dataset=prepped.get("eval"),
                                       processing_class=tokenizer, ref_model=ref_model, peft_config=peft_config,
                                       callbacks=callbacks)

    return run_trainer(config, output_dir=output_dir, resume=resume, config_cls=OfflineDominanceConfig,
                       build=build, data_mode="offline", prepare_data=prepare)
