"""Online multi-reward dominance trainer: TRL GRPO with one "dominance aggregator" reward (DESIGN.md §3.2).

The policy generates ``G`` completions per prompt (TRL), the reward bank scores each on ``d``
attributes, and :class:`~multidom.trainers.online_reward.DominanceReward` -- the single reward
function handed to ``trl.GRPOTrainer`` (public API only, TRL 1.16) -- turns the reward vectors of the
global batch into potentials ``phi = n dD(P ≽ Q)/dw`` against the baseline cloud and returns ``-phi``.
Generation, clipping, KL (``beta``), PEFT, vLLM and DeepSpeed stay TRL's; the baseline cloud is
prepared before training by all ranks together, each sampling its share of the prompts
(:mod:`multidom.trainers.online_baseline`), or precomputed by ``multidom baseline``.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

from trl import GRPOTrainer

from multidom.trainers.checkpoints import SafeCheckpoints
from multidom.trainers.online_baseline import add_baseline_column, as_bank
from multidom.trainers.online_config import OnlineDominanceConfig
from multidom.trainers.online_reward import DominanceReward
from multidom.trainers.reference import prepare_reference, reference_copy, zero3_partitioned
from multidom.trainers.sampling import EpochSeededRepeatSampler
from multidom.trainers.tracking import JsonlMetrics

__all__ = ["OnlineDominanceTrainer", "OnlineDominanceConfig", "DominanceReward"]


class OnlineDominanceTrainer(SafeCheckpoints, GRPOTrainer):
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
        if args.baseline_source == "reference":
            _check_materialised(model)
            if not zero3_partitioned(model):
                model.to(args.device)
        # every rank samples its share of the prompts; the shares are merged, so all ranks see one cloud
        wall, cpu = time.perf_counter(), time.process_time()
        train_dataset = add_baseline_column(train_dataset, args, scorer, model=model,
                                            tokenizer=processing_class, cache_path=cache)
        if eval_dataset is not None:
            eval_dataset = add_baseline_column(eval_dataset, args, scorer, model=model,
                                               tokenizer=processing_class, cache_path=cache)
        #: seconds this process spent building the baseline cloud (sampling + scoring, or reading the cache)
        self.baseline_seconds = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        # TRL keeps a reference only when beta > 0 and there is no adapter; refreshing the baseline without one
        # needs a copy of the initial weights, made before TRL patches the policy's forward (a deepcopy of the
        # patched model would still call the policy's own modules)
        peft = peft_config is not None or (hasattr(model, "disable_adapter") and hasattr(model, "peft_config"))
        frozen = reference_copy(model) if args.baseline_refresh_steps and args.beta == 0 and not peft else None
        self.dominance = DominanceReward(scorer, args)
        callbacks = [*(callbacks or []), JsonlMetrics(Path(args.output_dir) / "metrics.jsonl")]
        super().__init__(
            model=model, reward_funcs=[self.dominance], args=args, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks,
            peft_config=peft_config, **kwargs,
        )
        self.dominance.trainer = self
        self._frozen: Any = None if frozen is None else prepare_reference(frozen, self.accelerator)
        if args.baseline_refresh_steps:
            self.dominance.reference = self.reference_model

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        """TRL's sampler, reseeded per epoch so a resumed run sees the prompts an uninterrupted one sees
        (:mod:`multidom.trainers.sampling`)."""
        return EpochSeededRepeatSampler.like(super()._get_train_sampler(dataset))

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[Any]:
        """The frozen reference, ready for ``generate``, for resampling the baseline: the policy with its adapter
        disabled (PEFT, no copy), TRL's ``ref_model`` when it keeps one, else a reference prepared once by the
        engine (:mod:`multidom.trainers.reference`: reloaded from the policy's path under ZeRO-3 / FSDP, a
        copy made before training otherwise). Entered through TRL's ``unwrap_model_for_generation`` (ZeRO-3: parameters gathered
        when ``ds3_gather_for_generation``); every rank must enter."""
        from trl.models.utils import unwrap_model_for_generation

        gather = bool(getattr(self.args, "ds3_gather_for_generation", True))
        unwrapped = self.accelerator.unwrap_model(self.model)
        if hasattr(unwrapped, "disable_adapter") and hasattr(unwrapped, "peft_config"):
            with unwrap_model_for_generation(self.model_wrapped, self.accelerator, gather_deepspeed3_params=gather) as m:
                with m.disable_adapter():
                    yield m
            return
        ref = self.ref_model if self.ref_model is not None else self._frozen
        if ref is None:
            raise RuntimeError("no reference model: set baseline_refresh_steps > 0 (or beta > 0) before training")
        with unwrap_model_for_generation(ref, self.accelerator, gather_deepspeed3_params=gather) as m:
            yield m


def _check_materialised(model: Any) -> None:
    """Sampling the baseline needs the weights on every rank (FSDP's ``cpu_ram_efficient_loading`` leaves them
    on the meta device outside rank 0 until the engine syncs them)."""
    if any(p.device.type == "meta" for p in model.parameters()):
        raise ValueError("the policy's weights are on the meta device on this rank (FSDP cpu_ram_efficient_loading), "
                         "so it cannot sample the baseline before training: precompute it with `multidom baseline` "
                         "(then baseline_source: column) or set fsdp_cpu_ram_efficient_loading: false")
