"""multidom: multi-reward alignment of language models by multivariate stochastic dominance.

arXiv 2406.05882 (AOT), arXiv 2406.06425 (multivariate dominance via OT). The 1-D solver is
``multidom.ot1d.ot1d`` (not re-exported here, so the name ``multidom.ot1d`` stays the module).
"""
from multidom.api import solve, violation, violation_ratio
from multidom.clouds import ViolationResult
from multidom.costs import COSTS, Cost, cost_matrix, get_cost
from multidom.estimators import ESTIMATORS

__all__ = [
    "COSTS",
    "Cost",
    "ESTIMATORS",
    "ViolationResult",
    "cost_matrix",
    "get_cost",
    "solve",
    "violation",
    "violation_ratio",
]
__version__ = "0.1.0"
