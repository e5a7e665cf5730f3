"""AOT trainer: distributional preference alignment on the global batch (DESIGN.md §3.1).

Melnyk et al., arXiv 2406.05882. Data: preference rows (``prompt``, ``chosen``, ``rejected``; plain
text or conversations) for the paired and unpaired modes, or unpaired rows (``prompt``,
``completion``, ``label``; KTO-style, desirable and undesirable examples with different prompts)
for the unpaired mode. The loss is :mod:`multidom.objectives.aot`; the global-batch machinery is
:class:`multidom.trainers.global_batch.GlobalBatchTrainer`.

With ``global_batch=False``, one process and one micro-batch per step, the loss and gradients
equal TRL's ``DPOTrainer(loss_type="aot" | "aot_unpaired")`` (tests/test_aot_trainer.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from multidom.core.costs import COSTS
from multidom.objectives.aot import AOT_LOSSES
from multidom.trainers.data import PREFERENCE_COLUMNS, UNPAIRED_COLUMNS, check_columns, tokenize_example
from multidom.trainers.global_batch import GlobalBatchConfig, GlobalBatchTrainer

__all__ = ["AOTConfig", "AOTTrainer", "prepare_aot_dataset", "run_from_config"]


@dataclass
class AOTConfig(GlobalBatchConfig):
    """Hyperparameters of :class:`AOTTrainer` (plus every ``transformers.TrainingArguments`` field)."""

    pairing: str = field(
        default="unpaired",
        metadata={"help": "'unpaired' (sort chosen and rejected log-ratios apart, TRL's aot_unpaired) or "
                          "'paired' (sort policy and reference chosen-minus-rejected margins, TRL's aot)."},
    )
    cost: str = field(default="logistic", metadata={"help": f"Violation cost h, one of {', '.join(COSTS)}."})
    beta: float = field(default=0.01, metadata={"help": "Gain of the logistic cost (the AOT paper uses 0.01)."})
    margin: float = field(default=0.0, metadata={"help": "Margin m >= 0 added inside the cost."})
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Label smoothing in [0, 0.5) exactly as TRL's DPOTrainer applies it to aot losses."},
    )
    soft_sort_tau: float | None = field(
        default=None,
        metadata={"help": "Temperature of a NeuralSort soft sort in place of the exact sort; None sorts exactly."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.pairing not in AOT_LOSSES:
            raise ValueError(f"unknown pairing {self.pairing!r}; valid: {', '.join(AOT_LOSSES)}")
        if self.cost not in COSTS:
            raise ValueError(f"unknown cost {self.cost!r}; valid costs: {', '.join(COSTS)}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.soft_sort_tau is not None and not self.soft_sort_tau > 0:
            raise ValueError(f"soft_sort_tau must be > 0 or None, got {self.soft_sort_tau}")


def prepare_aot_dataset(dataset, tokenizer, *, max_length: int | None, pairing: str = "unpaired"):
    """Tokenise a preference or unpaired dataset (``datasets.Dataset``) for :class:`AOTTrainer`.

    Preference rows keep ``S = 2`` completions (chosen, rejected); unpaired rows ``S = 1`` with a
    boolean ``label``. Raises ``ValueError`` for missing columns, unpaired rows in paired mode,
    a dataset without desirable or without undesirable rows, and the per-row errors of
    :func:`multidom.trainers.data.tokenize_example`.
    """
    cols = dataset.column_names
    if all(c in cols for c in PREFERENCE_COLUMNS):
        def fn(row, idx):
            return tokenize_example(tokenizer, row["prompt"], [row["chosen"], row["rejected"]],
                                    max_length=max_length, row=idx)
    elif all(c in cols for c in UNPAIRED_COLUMNS):
        if pairing == "paired":
            raise ValueError("paired AOT needs prompt, chosen, rejected columns; unpaired rows (completion, label) "
                             "only work with pairing='unpaired'")
        labels = [bool(x) for x in dataset["label"]]
        if all(labels) or not any(labels):
            side = "undesirable (label False)" if all(labels) else "desirable (label True)"
            raise ValueError(f"unpaired dataset has no {side} rows; AOT compares the two sides")

        def fn(row, idx):
            return tokenize_example(tokenizer, row["prompt"], [row["completion"]], max_length=max_length, row=idx)
    else:
        kto_like = pairing == "unpaired" and ("completion" in cols or "label" in cols)
        check_columns(cols, UNPAIRED_COLUMNS if kto_like else PREFERENCE_COLUMNS, "AOT")
        raise ValueError(f"AOT dataset has unusable columns: {cols}")
    return dataset.map(fn, with_indices=True)


def _n_per_example(dataset) -> int:
    return 1 if dataset is not None and "label" in dataset.column_names and "chosen" not in dataset.column_names else 2


class AOTTrainer(GlobalBatchTrainer):
    """AOT (arXiv 2406.05882) with the dominance measured on the global batch.

    Takes a tokenised dataset from :func:`prepare_aot_dataset` (or raw rows, tokenised here).
    Logged metrics: ``dominance/quantile/violation`` (``D_h(U ≽ V)`` of the batch with the
    training cost), ``dominance/quantile/violation_ratio`` (chosen over rejected log-ratios with the
    hinge cost: 0 is dominance, 1/2 no preference), ``rewards/chosen/mean``,
    ``rewards/rejected/mean`` (``beta * logratio``).
    """

    extra_keys = ("label",)

    def __init__(self, model, args: AOTConfig, *, train_dataset=None, eval_dataset=None, processing_class=None,
                 **kwargs: Any):
        self._tokenizer, self._prep_args = processing_class, args
        train_dataset, eval_dataset = self.prepare_dataset(train_dataset), self.prepare_dataset(eval_dataset)
        self.n_per_example = _n_per_example(train_dataset)
        super().__init__(model, args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)

    def prepare_dataset(self, dataset):
        """Tokenise raw rows with :func:`prepare_aot_dataset` (already tokenised data passes through)."""
        if dataset is None or "completion_ids" in dataset.column_names:
            return dataset
        a = self._prep_args
        return prepare_aot_dataset(dataset, self._tokenizer, max_length=a.max_length, pairing=a.pairing)

    def _sides(self, logratios: torch.Tensor, extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Chosen ``(n,)`` and rejected ``(m,)`` log-ratios of the batch."""
        if logratios.shape[1] == 2:
            return logratios[:, 0], logratios[:, 1]
        label = extras["label"].bool()
        return logratios[label, 0], logratios[~label, 0]

    def objective(self, logps, ref_logps, extras):
        import multidom

        a = self.args
        kw = dict(cost=a.cost, beta=a.beta, margin=a.margin, label_smoothing=a.label_smoothing,
                  soft_sort_tau=a.soft_sort_tau)
        logratios = logps - ref_logps
        u, v = self._sides(logratios, extras)
        if a.pairing == "paired":
            if logps.shape[1] != 2:
                raise ValueError("paired AOT needs chosen and rejected completions of the same prompt")
            loss = AOT_LOSSES["paired"](logps[:, 0] - logps[:, 1], ref_logps[:, 0] - ref_logps[:, 1], **kw)
        else:
            loss = AOT_LOSSES["unpaired"](u, v, **kw)
        with torch.no_grad():
            u, v = u.detach(), v.detach()
            stats = {
                "dominance/quantile/violation": multidom.violation(
                    u[:, None], v[:, None], estimator="quantile", cost=a.cost, beta=a.beta, margin=a.margin),
                "dominance/quantile/violation_ratio": multidom.violation_ratio(
                    u[:, None], v[:, None], estimator="quantile", cost="hinge"),
                "rewards/chosen/mean": a.beta * u.mean(),
                "rewards/rejected/mean": a.beta * v.mean(),
            }
        return loss, stats


def run_from_config(config: dict, *, output_dir: str, resume: bool = False) -> dict:
    """CLI runner (``trainer: aot``): sections ``model``, ``data``, ``training`` (an :class:`AOTConfig`).

    ``data`` takes ``train`` (preference or unpaired rows) or ``desirable`` + ``undesirable``
    (KTO-style, merged with a ``label`` column), and optionally ``eval``; each a local file, a
    ``save_to_disk`` folder, or a hub id (``datasets.load_dataset``). Returns a JSON-able summary.
    """
    from multidom.trainers.runner import run_trainer

    def build(model, tokenizer, args, data, ref_model, peft_config, callbacks):
        return AOTTrainer(model, args, train_dataset=data["train"], eval_dataset=data.get("eval"),
                          processing_class=tokenizer, ref_model=ref_model, peft_config=peft_config,
                          callbacks=callbacks)

    return run_trainer(config, output_dir=output_dir, resume=resume, config_cls=AOTConfig, build=build,
                       data_mode="aot")
