"""Typed config of the online multi-reward dominance trainer (DESIGN.md §3.2).

:class:`OnlineDominanceConfig` subclasses TRL's ``GRPOConfig`` (TRL 1.16 public API) and adds the
dominance fields; every field carries one sentence of help. Generation, clipping, KL (``beta``),
PEFT, vLLM and DeepSpeed options are GRPO's. Two GRPO options are fixed because the method depends on
them: ``scale_rewards="none"`` (TRL then returns exactly ``A = -(phi - mean_group phi)``) and
``multi_objective_aggregation="sum_then_normalize"`` with a single reward function.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from multidom.objectives.online import ESTIMATOR_PARAMS, GROUPINGS, NORMALISERS

__all__ = ["OnlineDominanceConfig", "BASELINE_SOURCES", "DOMINANCE_FIELDS"]

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
class OnlineDominanceConfig(GRPOConfig):
    """GRPO config plus the dominance fields (all optional; defaults give a working run)."""

    rewards: list[Any] = field(
        default_factory=list,
        metadata={"help": "Reward bank: a list of reward_models.create specs; each model adds one or more "
                          "attributes (ignored when a bank object is passed to the trainer)."},
    )
    estimator: str = field(
        default="sinkhorn",
        metadata={"help": "Dominance estimator: 'quantile' (marginals), 'sliced' (projections), 'sinkhorn' "
                          "(joint, entropic) or 'exact' (joint, small clouds only)."},
    )
    cost: str = field(
        default="hinge",
        metadata={"help": "Violation cost h: 'hinge', 'squared_hinge', 'logistic' or 'least_squares'."},
    )
    cost_beta: float = field(
        default=1.0, metadata={"help": "Gain of the logistic cost (the KL coefficient is `beta`)."}
    )
    margin: float = field(default=0.0, metadata={"help": "Margin m >= 0 added inside the cost h(t + m)."})
    reg: float = field(
        default=0.1, metadata={"help": "Entropic regularisation lambda of the sinkhorn estimator."}
    )
    tol: float = field(
        default=1e-3,
        metadata={"help": "Sinkhorn stopping tolerance on the L1 marginal error (potentials within ~1% at 1e-3)."},
    )
    max_iter: int = field(default=1000, metadata={"help": "Cap on Sinkhorn iterations."})
    n_directions: int = field(
        default=64, metadata={"help": "Number of projection directions of the sliced estimator."}
    )
    directions: str = field(
        default="random", metadata={"help": "Sliced directions: 'random' or 'qmc' (seeded by `seed` + step)."}
    )
    estimator_kwargs: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "Further keyword arguments of multidom.violation (e.g. backend, max_iter, tol)."},
    )
    grouping: str = field(
        default="per_prompt",
        metadata={"help": "'per_prompt' (each prompt's generations vs its baseline, conditional dominance) "
                          "or 'pooled' (batch cloud vs baseline cloud)."},
    )
    normalisation: str = field(
        default="zscore",
        metadata={"help": "Per-attribute transform fitted on the baseline: 'zscore', 'cdf' or 'none'."},
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
        metadata={"help": "Must stay 'none': the advantage is then exactly -(phi - group mean of phi)."},
    )
    report_to: Any = field(
        default="wandb", metadata={"help": "Trackers; wandb runs offline unless a key is configured."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every this many steps."})

    def __post_init__(self):
        super().__post_init__()
        tables = {
            "estimator": (self.estimator, ESTIMATOR_PARAMS),
            "grouping": (self.grouping, GROUPINGS),
            "normalisation": (self.normalisation, NORMALISERS),
            "baseline_source": (self.baseline_source, BASELINE_SOURCES),
        }
        for name, (value, table) in tables.items():
            if value not in table:
                raise ValueError(f"{name} must be one of {', '.join(table)}; got {value!r}")
        if self.scale_rewards != "none":
            raise ValueError(
                f"scale_rewards must be 'none' for the dominance trainer (got {self.scale_rewards!r}): "
                "scaling by the group std would distort the potentials"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("multi_objective_aggregation must stay 'sum_then_normalize' (one aggregated reward)")
        if self.beta < 0:
            raise ValueError(f"beta (KL coefficient) must be >= 0, got {self.beta}")
        for name in ("baseline_samples", "buffer_steps", "n_directions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.baseline_refresh_steps < 0:
            raise ValueError(f"baseline_refresh_steps must be >= 0, got {self.baseline_refresh_steps}")
        if self.baseline_refresh_steps and self.baseline_source != "reference":
            raise ValueError("baseline_refresh_steps needs baseline_source='reference'")
        if not isinstance(self.rewards, list):
            raise ValueError(f"rewards must be a list of reward specs, got {type(self.rewards).__name__}")

    def violation_kwargs(self, step: int = 0) -> dict[str, Any]:
        """Keyword arguments of ``multidom.violation`` for the configured estimator.

        The sliced directions are seeded with ``seed + step`` so every process draws the same ones.
        """
        kwargs: dict[str, Any] = dict(
            cost=self.cost, beta=self.cost_beta, margin=self.margin, reg=self.reg, tol=self.tol,
            max_iter=self.max_iter,
            n_directions=self.n_directions, directions=self.directions, seed=int(self.seed) + int(step),
        )
        kwargs.update(self.estimator_kwargs or {})
        return kwargs


#: The fields this class adds to GRPOConfig (for docs and config sections).
DOMINANCE_FIELDS: tuple[str, ...] = (
    "rewards", "estimator", "cost", "cost_beta", "margin", "reg", "tol", "max_iter", "n_directions", "directions",
    "estimator_kwargs", "grouping", "normalisation", "baseline_source", "baseline_samples",
    "baseline_refresh_steps", "baseline_response_column", "baseline_rewards_column", "buffer_steps", "all_estimators_steps", "plot_steps",
)
