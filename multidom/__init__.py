"""multidom: multi-reward alignment of language models by multivariate stochastic dominance.

DESIGN.md; arXiv 2406.05882 (AOT), arXiv 2406.06425 (multivariate dominance via OT).
"""
from multidom.costs import COSTS, Cost, cost_matrix, get_cost

__all__ = ["COSTS", "Cost", "cost_matrix", "get_cost"]
__version__ = "0.1.0"
