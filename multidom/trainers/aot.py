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

from multidom.core.spec import DominanceSpec
from multidom.lm.tokenize import PREFERENCE_COLUMNS, UNPAIRED_COLUMNS, check_columns, tokenize_example
from multidom.objectives.aot import AOT_LOSSES, AOT_SPEC
from multidom.trainers.global_batch import GlobalBatchConfig, GlobalBatchTrainer
from multidom.trainers.spec_field import WithDominanceSpec

__all__ = ["AOTConfig", "AOTTrainer", "prepare_aot_dataset"]


@dataclass
class AOTConfig(WithDominanceSpec, GlobalBatchConfig):
    """Hyperparameters of :class:`AOTTrainer` (plus every ``transformers.TrainingArguments`` field)."""

    pairing: str = field(
        default="unpaired",
        metadata={"help": "'unpaired' (sort chosen and rejected log-ratios apart, TRL's aot_unpaired) or "
                          "'paired' (sort policy and reference chosen-minus-rejected margins, TRL's aot)."},
    )
    beta: float = field(
        default=0.01,
        metadata={"help": "DPO temperature: the implicit rewards beta * logratio are compared (the AOT paper uses 0.01)."},
    )
    dominance: Any = field(
        default=AOT_SPEC,
        metadata={"help": "The violation on beta * logratio: a DominanceSpec or its mapping (default: logistic "
                          "cost with gain 1, exact 1-D sorting = TRL's aot losses)."},
    )
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
        self.dominance = DominanceSpec.from_mapping(self.dominance, "dominance", **AOT_SPEC.to_dict())
        if self.dominance.normalisation != "none":
            raise ValueError("AOT compares implicit rewards beta * logratio: dominance.normalisation must be 'none'")
        if self.pairing not in AOT_LOSSES:
            raise ValueError(f"unknown pairing {self.pairing!r}; valid: {', '.join(AOT_LOSSES)}")
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
    :func:`multidom.lm.tokenize.tokenize_example`.
    """
    cols = dataset.column_names
    if "prompt" not in cols and "chosen" in cols and "rejected" in cols:
        from trl.data_utils import extract_prompt  # TRL's conversational rows without a prompt column

        dataset = dataset.map(extract_prompt)
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
    Logged metrics: ``dominance/<estimator>/violation`` (``D_h(U ≽ V)`` of the batch with the
    training spec), ``dominance/<estimator>/eps`` (the ratio of chosen over rejected implicit rewards
    with the hinge cost, as the AOT paper reports it: 0 is first-order dominance, 1/2 no preference), ``rewards/chosen/mean``,
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
        a = self.args
        kw = dict(beta=a.beta, spec=a.dominance, label_smoothing=a.label_smoothing, soft_sort_tau=a.soft_sort_tau)
        logratios = logps - ref_logps
        u, v = self._sides(logratios, extras)
        if a.pairing == "paired":
            if logps.shape[1] != 2:
                raise ValueError("paired AOT needs chosen and rejected completions of the same prompt")
            loss = AOT_LOSSES["paired"](logps[:, 0] - logps[:, 1], ref_logps[:, 0] - ref_logps[:, 1], **kw)
        else:
            loss = AOT_LOSSES["unpaired"](u, v, **kw)
        with torch.no_grad():
            u, v = a.beta * u.detach(), a.beta * v.detach()
            est = a.dominance.estimator
            stats = {
                f"dominance/{est}/violation": a.dominance.violation(u[:, None], v[:, None]),
                f"dominance/{est}/eps": a.dominance.replace(cost="hinge", margin=0.0).violation_ratio(
                    u[:, None], v[:, None]),
                "rewards/chosen/mean": u.mean(),
                "rewards/rejected/mean": v.mean(),
            }
        return loss, stats
