"""Online multi-reward dominance trainer: TRL GRPO with one "dominance aggregator" reward (DESIGN.md §3.2).

The policy generates ``G`` completions per prompt (TRL), the reward bank scores each on ``d``
attributes, and :class:`~multidom.trainers.online_reward.DominanceReward` -- the single reward
function handed to ``trl.GRPOTrainer`` (public API only, TRL 1.16) -- turns the reward vectors of the
global batch into potentials ``phi = n dD(P ≽ Q)/dw`` against the baseline cloud and returns ``-phi``.
Generation, clipping, KL (``beta``), PEFT, vLLM and DeepSpeed stay TRL's; the baseline cloud is
prepared before training (:mod:`multidom.trainers.online_baseline`).
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Iterator

from trl import GRPOTrainer

from multidom.trainers.online_baseline import add_baseline_column, as_bank
from multidom.trainers.online_config import OnlineDominanceConfig
from multidom.trainers.online_reward import DominanceReward
from multidom.trainers.tracking import JsonlMetrics

__all__ = ["OnlineDominanceTrainer", "OnlineDominanceConfig", "DominanceReward"]


class OnlineDominanceTrainer(GRPOTrainer):
    """GRPO whose only reward is the dominance aggregator (DESIGN.md §3.2).

    Args:
        model: a ``PreTrainedModel`` (the reference is its initial state; load one with
            :func:`multidom.lm.loading.load_model`).
        args: :class:`OnlineDominanceConfig`.
        train_dataset: a ``datasets.Dataset`` with a ``prompt`` column (plus the baseline columns the
            chosen ``baseline_source`` needs); the baseline column is added before training.
        reward_bank: a ``reward_models.RewardBank``, or a list of reward models / specs / TRL reward
            callables (stacked into a bank).
        processing_class: the tokenizer; eval_dataset, callbacks, peft_config, **kwargs: as ``trl.GRPOTrainer``.
    """

    def __init__(
        self, model: Any, args: OnlineDominanceConfig, train_dataset: Any, reward_bank: Any, *,
        processing_class: Any, eval_dataset: Any = None, callbacks: list | None = None, peft_config: Any = None,
        **kwargs: Any,
    ):
        if not isinstance(args, OnlineDominanceConfig):
            raise ValueError(f"args must be an OnlineDominanceConfig, got {type(args).__name__}")
        if isinstance(model, str):
            raise ValueError("pass a loaded model (multidom.lm.loading.load_model), not a path")
        scorer = as_bank(reward_bank)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        if train_dataset is None or "prompt" not in train_dataset.column_names:
            raise ValueError("train_dataset must be a datasets.Dataset with a 'prompt' column")
        cache = Path(args.output_dir) / "baseline_cache.json"
        with args.main_process_first(desc="baseline cloud"):  # rank 0 samples, the others read the cache
            model.to(args.device)
            train_dataset = add_baseline_column(train_dataset, args, scorer, model=model,
                                                tokenizer=processing_class, cache_path=cache)
            if eval_dataset is not None:
                eval_dataset = add_baseline_column(eval_dataset, args, scorer, model=model,
                                                   tokenizer=processing_class, cache_path=cache)
        self.dominance = DominanceReward(scorer, args)
        callbacks = [*(callbacks or []), JsonlMetrics(Path(args.output_dir) / "metrics.jsonl")]
        super().__init__(
            model=model, reward_funcs=[self.dominance], args=args, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks,
            peft_config=peft_config, **kwargs,
        )
        self.dominance.trainer = self
        self._frozen: Any = None
        if args.baseline_refresh_steps:
            with self.reference_model():  # a frozen copy (when one is needed) holds the initial weights
                pass
            self.dominance.reference = self.reference_model

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[Any]:
        """The frozen reference for resampling the baseline: the policy with its adapter disabled (PEFT, no
        copy), TRL's ``ref_model`` when it keeps one, else a frozen copy of the initial weights."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if hasattr(unwrapped, "disable_adapter") and hasattr(unwrapped, "peft_config"):
            with unwrapped.disable_adapter():
                yield unwrapped
            return
        if self.ref_model is not None:
            yield self.accelerator.unwrap_model(self.ref_model)
            return
        if self._frozen is None:
            self._frozen = copy.deepcopy(unwrapped).eval().requires_grad_(False)
        yield self._frozen
