"""The reward-model bank and its plug-in registry (DESIGN.md §4).

>>> import reward_models
>>> bank = reward_models.RewardBank(["sentiment", {"type": "length", "target": 50}], normalisation="zscore")
>>> reward_models.available()          # name -> description, built-ins and installed plug-ins

The built-in models register themselves when their modules are imported (below).
"""
from multidom.core.normalize import Normalizer
from reward_models import hf, lexicon, relevance, rules  # noqa: F401  (registers the built-ins)
from reward_models.bank import BankScores, RewardBank
from reward_models.base import HeadView, RewardModel
from reward_models.registry import ENTRY_POINT_GROUP, available, create, get_factory, plugin_errors, register

__all__ = [
    "ENTRY_POINT_GROUP",
    "BankScores",
    "HeadView",
    "Normalizer",
    "RewardBank",
    "RewardModel",
    "available",
    "create",
    "get_factory",
    "plugin_errors",
    "register",
]
