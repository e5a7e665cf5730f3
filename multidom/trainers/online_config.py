"""Typed config of the online multi-reward dominance trainer (DESIGN.md §3.2).

:class:`OnlineDominanceConfig` subclasses TRL's ``GRPOConfig`` (TRL 1.16 public API) and adds the
dominance fields; every field carries one sentence of help. Generation, clipping, KL (``beta``, TRL's
meaning), PEFT, vLLM and DeepSpeed options are GRPO's. What ``D(P ≽ Q)`` means -- estimator, cost, its
gain and margin, estimator options, normalisation -- is one :class:`~multidom.core.spec.DominanceSpec`
in the ``dominance`` field (a mapping is converted and validated on construction). One GRPO option is fixed because the method depends on
it: ``multi_objective_aggregation="sum_then_normalize"`` with a single reward function. ``scale_rewards``
sets the scale of the advantages (:data:`ADVANTAGE_SCALES`): ``"none"`` gives exactly
``A = -(phi - mean_group phi)``; ``"group"`` divides each prompt's centred potentials by their std,
``A = -(phi - mean phi) / (std phi + 1e-4)`` (TRL's formula; a prompt whose potentials are all equal keeps
``A = 0``), which puts every group's step on GRPO's unit scale; ``"batch"`` divides by the batch std.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from multidom.core.estimators import ESTIMATORS
from multidom.core.spec import DominanceSpec
from multidom.objectives.online import GROUPINGS
from multidom.trainers.spec_field import WithDominanceSpec

__all__ = ["OnlineDominanceConfig", "ADVANTAGE_SCALES", "BASELINE_SOURCES", "DOMINANCE_FIELDS", "SPEC_DEFAULTS"]

#: The online trainer's dominance spec where the ``dominance`` field leaves a key out: coordinate-wise
#: (quantile) violation with the logistic cost, which -- unlike the hinge -- never stops giving a signal once a
#: prompt's cloud dominates its baseline (as in AOT); chosen by ``experiments/frontier.py``
#: (``experiments/results/frontier.md``: lower eps at matched KL than hinge and than TRL GDPO).
SPEC_DEFAULTS: dict[str, Any] = {"estimator": "quantile", "cost": "logistic"}

#: ``scale_rewards``: how the centred potentials ``-(phi - mean_group phi)`` are scaled into advantages (TRL).
ADVANTAGE_SCALES: dict[str, str] = {
    "none": "A = -(phi - mean_group phi): the potentials' own scale (the cost's slope on normalised attributes)",
    "group": "A = -(phi - mean_group phi) / (std_group phi + 1e-4): unit scale per prompt, as GRPO's advantages",
    "batch": "A = -(phi - mean_group phi) / (std_batch phi + 1e-4): one scale for the whole batch",
}

#: Where the negative (baseline) cloud comes from.
BASELINE_SOURCES: dict[str, str] = {
    "reference": "completions of the reference (initial) model, sampled once before training and cached "
                 "as a dataset column",
    "dataset": "the dataset's own responses (column `baseline_response_column`), scored once before training",
    "column": "reward vectors already in the dataset (column `baseline_rewards_column`, a list of d-vectors "
              "per prompt)",
    "buffer": "a rolling buffer of the policy's own clouds from the last `buffer_steps` generation batches",
}


@dataclass
class OnlineDominanceConfig(WithDominanceSpec, GRPOConfig):
    """GRPO config plus the dominance fields (all optional; defaults give a working run)."""

    dominance: Any = field(
        default_factory=lambda: DominanceSpec(**SPEC_DEFAULTS),
        metadata={"help": "What D(P >= Q) means: a DominanceSpec or its mapping (estimator, cost, cost_gain, "
                          "margin, options, normalisation); keys left out take SPEC_DEFAULTS."},
    )
    grouping: str = field(
        default="per_prompt",
        metadata={"help": "'per_prompt' (each prompt's generations vs its baseline, conditional dominance) "
                          "or 'pooled' (batch cloud vs baseline cloud)."},
    )
    baseline_source: str = field(
        default="reference",
        metadata={"help": "Negative cloud: 'reference', 'dataset', 'column' or 'buffer' (see BASELINE_SOURCES)."},
    )
    baseline_samples: int = field(
        default=8, metadata={"help": "Reference completions sampled per prompt for baseline_source='reference'."}
    )
    baseline_refresh_steps: int = field(
        default=0,
        metadata={"help": "Resample the reference baseline of each batch's prompts every this many steps "
                          "(0: sample once before training)."},
    )
    baseline_response_column: str = field(
        default="response",
        metadata={"help": "Dataset column with one response (or a list) per prompt for baseline_source='dataset'."},
    )
    baseline_rewards_column: str = field(
        default="baseline_rewards",
        metadata={"help": "Dataset column holding the cached baseline reward vectors (list of d-vectors per row)."},
    )
    buffer_steps: int = field(
        default=4, metadata={"help": "Generation batches kept in the rolling buffer for baseline_source='buffer'."}
    )
    dead_attribute_steps: int = field(
        default=1,
        metadata={"help": "Stop the run when an attribute has no finite score in the whole global batch for this "
                          "many consecutive steps (a dead reward model silently stops all learning)."},
    )
    all_estimators_steps: int = field(
        default=10,
        metadata={"help": "Every this many steps also log eps for quantile, sliced and sinkhorn (0: never)."},
    )
    plot_steps: int = field(
        default=50,
        metadata={"help": "Every this many steps save a scatter plot of the two clouds and a table of samples "
                          "(0: never)."},
    )
    # GRPO defaults changed for this method.
    beta: float = field(
        default=0.04, metadata={"help": "KL coefficient to the reference model (k3 estimator per token, as GRPO)."}
    )
    scale_rewards: str = field(
        default="none",
        metadata={"help": "Scale of the advantages from the centred potentials: 'none', 'group' or 'batch' "
                          "(see ADVANTAGE_SCALES)."},
    )
    report_to: Any = field(
        default="wandb", metadata={"help": "Trackers; wandb runs offline unless a key is configured."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every this many steps."})

    def __post_init__(self):
        if isinstance(self.num_generations, int) and self.num_generations < 2:  # before GRPO divides by it
            raise ValueError(f"num_generations must be >= 2 (a group needs two completions), got {self.num_generations}")
        super().__post_init__()
        self.dominance = DominanceSpec.from_mapping(self.dominance, "dominance", **SPEC_DEFAULTS)
        tables = {
            "grouping": (self.grouping, GROUPINGS),
            "baseline_source": (self.baseline_source, BASELINE_SOURCES),
            "scale_rewards": (self.scale_rewards, ADVANTAGE_SCALES),
        }
        for name, (value, table) in tables.items():
            if value not in table:
                raise ValueError(f"{name} must be one of {', '.join(table)}; got {value!r}")
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("multi_objective_aggregation must stay 'sum_then_normalize' (one aggregated reward)")
        if self.beta < 0:
            raise ValueError(f"beta (KL coefficient) must be >= 0, got {self.beta}")
        for name in ("baseline_samples", "buffer_steps", "dead_attribute_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.baseline_refresh_steps < 0:
            raise ValueError(f"baseline_refresh_steps must be >= 0, got {self.baseline_refresh_steps}")
        if self.baseline_refresh_steps and self.baseline_source != "reference":
            raise ValueError("baseline_refresh_steps needs baseline_source='reference'")

    def step_options(self, step: int, estimator: str | None = None) -> dict[str, Any]:
        """Per-step options of ``estimator`` (default: the spec's): fresh sliced directions every step, the
        same on every process (``seed + step``), unless the spec fixes a seed."""
        estimator = estimator or self.dominance.estimator
        fixed = estimator == self.dominance.estimator and "seed" in self.dominance.options
        if "seed" in ESTIMATORS[estimator].options and not fixed:
            return {"seed": int(self.seed) + int(step)}
        return {}



#: The fields this class adds to GRPOConfig (for docs and config sections).
DOMINANCE_FIELDS: tuple[str, ...] = (
    "dominance", "grouping", "baseline_source", "baseline_samples",
    "baseline_refresh_steps", "baseline_response_column", "baseline_rewards_column", "buffer_steps",
    "dead_attribute_steps", "all_estimators_steps", "plot_steps",
)
