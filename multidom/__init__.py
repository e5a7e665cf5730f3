"""multidom: multi-reward alignment of language models by multivariate stochastic dominance.

DESIGN.md; arXiv 2406.05882 (AOT), arXiv 2406.06425 (multivariate dominance via OT).
"""
from multidom.api import solve, violation, violation_ratio
from multidom.clouds import ViolationResult
from multidom.costs import COSTS, Cost, cost_matrix, get_cost
from multidom.estimators import ESTIMATORS
from multidom.ot1d import ot1d

__all__ = [
    "COSTS",
    "Cost",
    "ESTIMATORS",
    "ViolationResult",
    "cost_matrix",
    "get_cost",
    "ot1d",
    "solve",
    "violation",
    "violation_ratio",
]
__version__ = "0.1.0"
