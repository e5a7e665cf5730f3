"""The math core of multidom: costs, 1-D OT, the violation estimators, Sinkhorn, the violation ratio,
the dominance tests, the dominance spec and the one normaliser (DESIGN.md §1-2, §5).

It imports torch, NumPy, SciPy, POT and geomloss only -- never transformers, TRL, datasets or wandb
(tests/core/test_core_imports.py proves it), so it can be used on its own.
"""
from multidom.core.api import ratio_from_value, solve, violation, violation_ratio
from multidom.core.clouds import ViolationResult
from multidom.core.costs import COSTS, Cost, cost_matrix, get_cost
from multidom.core.estimators import ESTIMATORS
from multidom.core.normalize import NORMALISATIONS, Normalizer
from multidom.core.spec import DominanceSpec

__all__ = [
    "COSTS", "Cost", "DominanceSpec", "ESTIMATORS", "NORMALISATIONS", "Normalizer", "ViolationResult",
    "cost_matrix", "get_cost", "ratio_from_value", "solve", "violation", "violation_ratio",
]
