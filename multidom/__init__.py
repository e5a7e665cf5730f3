"""multidom: multi-reward alignment of language models by multivariate stochastic dominance.

arXiv 2406.05882 (AOT), arXiv 2406.06425 (multivariate dominance via OT).

Layers (each imports only the ones above it):

* :mod:`multidom.core` -- the math (costs, 1-D OT, estimators, Sinkhorn, ratio, tests, the
  :class:`DominanceSpec`, the normaliser); no transformers/TRL/datasets/wandb;
* :mod:`reward_models` -- the reward bank and its plug-in registry;
* :mod:`multidom.objectives` -- the losses and the online potentials, pure tensor functions;
* :mod:`multidom.lm` -- model/tokenizer loading, generation, per-sequence log-probs, datasets;
* :mod:`multidom.trainers` -- thin trainers (online on TRL's GRPOTrainer, AOT and offline on the
  global-batch Trainer); :mod:`multidom.evaluation` -- dominance reports between models;
* :mod:`multidom.app` -- the run recipes: CLI, YAML configs, the quickstart and the toy task.
"""
from multidom.core import (
    COSTS,
    ESTIMATORS,
    NORMALISATIONS,
    Cost,
    DominanceSpec,
    Normalizer,
    ViolationResult,
    cost_matrix,
    get_cost,
    ratio_from_value,
    solve,
    violation,
    violation_ratio,
)

__all__ = [
    "COSTS", "Cost", "DominanceSpec", "ESTIMATORS", "NORMALISATIONS", "Normalizer", "ViolationResult",
    "cost_matrix", "get_cost", "ratio_from_value", "solve", "violation", "violation_ratio",
]
__version__ = "0.2.0"
