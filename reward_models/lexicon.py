"""Offline text classifiers as rewards: ``sentiment`` (VADER) and ``non_offensive`` (alt-profanity-check).

Both need the ``rewards`` extra (``pip install 'multidom[rewards]'``); a missing package fails with the exact
``pip install`` to run.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reward_models.base import RewardModel, Score, Text, check_batch, completion_text, require
from reward_models.registry import register

__all__ = ["SentimentReward", "NonOffensiveReward"]


@register("sentiment", description="VADER compound sentiment of the completion, in [-1, 1] (vaderSentiment)")
class SentimentReward(RewardModel):
    """VADER's compound score (Hutto & Gilbert 2014): the normalised sum of lexicon valences, in ``[-1, 1]``."""

    def __init__(self, *, name: str = "sentiment", higher_is_better: bool = True) -> None:
        super().__init__(name, higher_is_better=higher_is_better, description="VADER compound sentiment")
        vader = require("vaderSentiment.vaderSentiment", "vaderSentiment")
        self._analyzer = vader.SentimentIntensityAnalyzer()

    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        check_batch(f"reward model {self.name!r}", prompts, completions)
        return [float(self._analyzer.polarity_scores(completion_text(c))["compound"]) for c in completions]


@register("non_offensive", description="1 - offensive-language probability of the completion (alt-profanity-check)")
class NonOffensiveReward(RewardModel):
    """``1 - p_offensive(text)``, where ``p_offensive`` is alt-profanity-check's ``predict_prob`` (linear SVM)."""

    def __init__(self, *, name: str = "non_offensive") -> None:
        super().__init__(name, description="1 - offensive probability (alt-profanity-check)")
        self._predict_prob = require("profanity_check", "alt-profanity-check").predict_prob

    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        check_batch(f"reward model {self.name!r}", prompts, completions)
        probs = self._predict_prob([completion_text(c) for c in completions])
        return [1.0 - float(p) for p in probs]
