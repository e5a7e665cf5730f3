"""The frozen reference model under every engine, prepared the way TRL prepares its own (DESIGN.md §6).

* :func:`prepare_reference` -- TRL 1.16's three-way preparation (``GRPOTrainer.__init__``): DeepSpeed ->
  ``trl.models.utils.prepare_deepspeed`` (ZeRO-3 shards the reference like the policy; other stages run it
  unsharded with ZeRO off); FSDP -> ``trl.models.utils.prepare_fsdp`` (FSDP1 or FSDP2 ``fully_shard``,
  the plugin's settings); otherwise ``accelerator.prepare_model(ref, evaluation_mode=True)`` (device
  placement, no DDP wrapper). No sharding is written here.
* :func:`reference_copy` -- a second copy of the policy's initial weights for a run without PEFT: reloaded
  from the policy's path when the weights are sharded (ZeRO-3 partitions the parameters at load time, and a
  ``deepcopy`` would copy empty stubs) -- as TRL does -- else a ``deepcopy``.
* :func:`gathered_for_generation` -- full parameters for ``generate`` on a ZeRO-3-partitioned module that no
  engine drives yet (DeepSpeed's ``GatheredParameters``, what TRL's ``unwrap_model_for_generation`` does with
  ``ds3_gather_for_generation``); a no-op otherwise.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

__all__ = ["prepare_reference", "reference_copy", "gathered_for_generation", "zero3_partitioned", "is_sharded_run"]


def zero3_partitioned(model: Any) -> bool:
    """Whether ``model``'s parameters are ZeRO-3 partitioned (DeepSpeed tags them with ``ds_id``)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def is_sharded_run() -> bool:
    """ZeRO-3 or FSDP configured for this run (transformers' / accelerate's own flags)."""
    import os

    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled()) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def reference_copy(model: Any) -> Any:
    """A frozen copy of ``model``'s initial weights (see the module docstring)."""
    if is_sharded_run() or zero3_partitioned(model):
        from trl.trainer.utils import create_model_from_path, get_config_model_id

        ref = create_model_from_path(get_config_model_id(model.config), dtype=model.dtype,
                                     attn_implementation=model.config._attn_implementation)
    else:
        ref = copy.deepcopy(model)
    return ref.eval().requires_grad_(False)


def prepare_reference(ref: Any, accelerator: Any) -> Any:
    """``ref`` prepared by the run's engine for inference (TRL's dispatch, see the module docstring)."""
    from trl.models.utils import prepare_deepspeed, prepare_fsdp

    if getattr(accelerator.state, "deepspeed_plugin", None) is not None:
        return prepare_deepspeed(ref, accelerator)
    if getattr(accelerator.state, "fsdp_plugin", None) is not None:
        return prepare_fsdp(ref, accelerator)
    return accelerator.prepare_model(ref, evaluation_mode=True)


@contextlib.contextmanager
def gathered_for_generation(model: Any) -> Iterator[Any]:
    """``model`` with its full parameters while inside (ZeRO-3 partitioned modules whose parameters are not
    gathered already; every rank must enter)."""
    params = getattr(model, "parameters", list)()
    if not any(getattr(getattr(p, "ds_status", None), "name", "") == "NOT_AVAILABLE" for p in params):
        yield model
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        yield model
