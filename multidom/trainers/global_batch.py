"""Global-batch dominance on top of transformers' ``Trainer`` (DESIGN.md §3, intro).

Every offline objective depends on the model only through per-sequence log-probabilities, so an
optimizer step runs in three phases over the accumulation window that ``Trainer.get_batch_samples``
hands over up front:

1. the policy's (and, unless cached, the reference's) summed completion log-probabilities of
   every micro-batch, without gradient; gathered across processes (:func:`gather_cat`) into the
   **global** batch ``(N, S)``;
2. the objective and its gradient ``g = dL/d logps`` with respect to those ``N S`` scalars, once;
3. for each micro-batch, a forward pass with gradient and ``backward`` of the surrogate
   ``world_size * sum(logps * g_local)``, whose parameter gradient is ``sum (dL/ds) (ds/dθ)``;
   DDP averages over processes, hence the ``world_size`` factor.

The parameter gradient is exactly that of the objective on the global batch (up to dropout noise
between the two forward passes), at the activation memory of one micro-batch and the cost of one
extra forward pass without gradient. ``global_batch=False`` gives TRL's behaviour: the objective
on each micro-batch, divided by the number of accumulation steps.

Subclasses set :attr:`n_per_example` / :attr:`extra_keys` and implement :meth:`objective`.
"""
from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from multidom.lm.logprobs import add_log_prob_head, sequence_logps
from multidom.lm.tokenize import SequenceCollator
from multidom.trainers.checkpoints import SafeCheckpoints
from multidom.trainers.distributed import gather_cat, gather_objects, shard, world
from multidom.trainers.reference import (
    gathered_for_generation,
    is_sharded_run,
    prepare_reference,
    reference_copy,
)
from multidom.trainers.tracking import JsonlMetrics

__all__ = ["GlobalBatchConfig", "GlobalBatchTrainer"]


@dataclass
class GlobalBatchConfig(TrainingArguments):
    """Training arguments shared by the offline trainers (a ``transformers.TrainingArguments``)."""

    global_batch: bool = field(
        default=True,
        metadata={"help": "Measure dominance on the global batch (all processes and accumulation steps); "
                          "False computes it per micro-batch, as TRL does."},
    )
    max_length: int | None = field(
        default=1024,
        metadata={"help": "Maximum tokens of prompt plus completion; completions are cut, longer prompts are an error."},
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "Compute the reference log-probabilities once before training and cache them with the dataset."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the collator needs the tokenised columns."},
    )
    report_to: Any = field(
        default="none",
        metadata={"help": "Integrations to report to (e.g. 'wandb', 'none'); wandb runs offline unless a key is set."},
    )


@dataclass
class _Cached:
    grad: torch.Tensor  # (b, S) dL/dlogps of this micro-batch
    ref: torch.Tensor  # (b, S) reference log-probs
    report: torch.Tensor  # 0-dim share of the step's loss reported for this micro-batch


class GlobalBatchTrainer(SafeCheckpoints, Trainer):
    """``Trainer`` whose loss is a function of per-sequence log-probabilities ``(N, S)``.

    Args:
        model: the policy (a causal LM, or a PEFT model).
        ref_model: a separate frozen reference; ``None`` means the policy with its PEFT adapter
            disabled (PEFT), or a frozen copy of the policy made here (reloaded from its path under
            ZeRO-3 / FSDP). Either way the reference is prepared by the engine
            (:func:`multidom.trainers.reference.prepare_reference`); with ``precompute_ref_log_probs``
            it scores the dataset once, sharded over the ranks, and is then released.
        args: a :class:`GlobalBatchConfig` subclass.
        train_dataset / eval_dataset: already tokenised (see :mod:`multidom.lm.tokenize`).
        processing_class: the tokenizer (its pad id pads the batches).
    """

    n_per_example: int = 2
    extra_keys: tuple[str, ...] = ()
    loss_is_scaled_for_ga = True  # the GA / world-size scaling is done here, in compute_loss

    def __init__(self, model, args: GlobalBatchConfig, *, ref_model=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, callbacks=None, peft_config=None):
        if getattr(Trainer, "loss_is_scaled_for_ga", "missing") == "missing":  # transformers < 5.19
            import transformers

            raise ImportError(f"multidom's global-batch trainers need transformers >= 5.19 (the Trainer hook "
                              f"loss_is_scaled_for_ga); found {transformers.__version__}, whose Trainer would scale "
                              "the gradients for accumulation a second time")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        add_log_prob_head(model)
        self._is_peft = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        if ref_model is None and not self._is_peft and (not args.precompute_ref_log_probs or is_sharded_run()):
            ref_model = reference_copy(model)  # reloaded from the policy's path under ZeRO-3 / FSDP
        if ref_model is not None:
            add_log_prob_head(ref_model)
            ref_model.eval().requires_grad_(False)
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required: it tokenises and pads the batches")
        pad = processing_class.pad_token_id if processing_class.pad_token_id is not None else processing_class.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with; set tokenizer.pad_token")
        callbacks = [*(callbacks or []), JsonlMetrics(Path(args.output_dir) / "metrics.jsonl")]
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, data_collator=SequenceCollator(pad), callbacks=callbacks)
        # the engine prepares the reference as it prepares the policy (ZeRO-3 / FSDP shard it; DDP: device only)
        self.ref_model = None if ref_model is None else prepare_reference(ref_model, self.accelerator)
        self._plan: dict[int, _Cached] = {}
        self._cached: _Cached | None = None
        self._reported = torch.zeros(())
        self._metrics: dict[str, list[float]] = defaultdict(list)
        if args.precompute_ref_log_probs:
            self.train_dataset = self._precompute_ref(self.train_dataset)
            if self.eval_dataset is not None:
                self.eval_dataset = self._precompute_ref(self.eval_dataset)
            self.ref_model = None  # the cached column replaces it; free its memory

    # ---- to be provided by subclasses -------------------------------------------------------
    def prepare_dataset(self, dataset):
        """Tokenise raw rows (used by :meth:`evaluate` on a dataset passed in); identity by default."""
        return dataset

    def objective(self, logps: torch.Tensor, ref_logps: torch.Tensor,
                  extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of the batch from ``logps, ref_logps: (N, S)`` and per-example ``extras``; plus metrics."""
        raise NotImplementedError

    # ---- log-probabilities ------------------------------------------------------------------
    def _ref_context(self):
        if self.ref_model is None and self._is_peft:
            return self.accelerator.unwrap_model(self.model).disable_adapter()
        return contextlib.nullcontext()

    @torch.no_grad()
    def reference_logps(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(b, S)`` reference log-probabilities: cached column, separate model, or adapter disabled."""
        if "ref_logps" in inputs:
            return inputs["ref_logps"]
        model = self.ref_model if self.ref_model is not None else self.model
        with self._ref_context(), self.compute_loss_context_manager():
            return sequence_logps(model, inputs, self.n_per_example)

    @torch.no_grad()
    def _precompute_ref(self, dataset):
        """The ``ref_logps`` column: each rank scores its share of the rows (every rank the same number of
        forward passes, the collective ones of ZeRO-3 / FSDP included), and the shares are merged."""
        model = self.ref_model if self.ref_model is not None else self.model
        was_training = model.training
        model.eval()
        mine, share = shard(len(dataset))
        padded = mine + [mine[-1] if mine else 0] * (share - len(mine))
        rows: dict[int, list[float]] = {}
        bs = self.args.per_device_eval_batch_size
        with gathered_for_generation(model):  # a policy ZeRO-3 partitioned before any engine drives it
            for start in range(0, len(padded), bs):
                idx = padded[start:start + bs]
                batch = self._prepare_inputs(self.data_collator([dataset[i] for i in idx]))
                with self._ref_context():
                    rows.update(zip(idx, sequence_logps(model, batch, self.n_per_example).float().cpu().tolist()))
        model.train(was_training)
        for part in gather_objects({i: rows[i] for i in mine}):
            rows.update(part)
        if "ref_logps" in dataset.column_names:
            dataset = dataset.remove_columns("ref_logps")
        return dataset.add_column("ref_logps", [rows[i] for i in range(len(dataset))])

    def _extras(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: inputs[k] for k in self.extra_keys if k in inputs}

    # ---- phase 1 and 2: the global batch, once per optimizer step ----------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._plan = self._global_plan(batches) if self.args.global_batch and batches else {}
        return batches, num_items

    def _global_plan(self, batches: list[dict[str, torch.Tensor]]) -> dict[int, _Cached]:
        self.model_wrapped.train()
        logps, refs, extras = self._sequence_scalars(batches)
        sizes = [lp.shape[0] for lp in logps]
        local_logps, local_ref = torch.cat(logps), torch.cat(refs)
        all_logps, mine = gather_cat(local_logps)
        all_ref, _ = gather_cat(local_ref)
        all_extras = {k: gather_cat(torch.cat(v))[0] for k, v in extras.items()}
        leaf = all_logps.detach().requires_grad_(True)
        with torch.enable_grad():
            loss, stats = self.objective(leaf, all_ref, all_extras)
            (grad,) = torch.autograd.grad(loss, leaf)
        self._record({**stats, "global_batch/examples": float(all_logps.shape[0])})
        grad = grad[mine].split(sizes)
        ref = local_ref.split(sizes)
        report = loss.detach() / len(batches)
        return {id(raw): _Cached(g, r, report) for raw, g, r in zip(batches, grad, ref)}

    @torch.no_grad()
    def _sequence_scalars(self, batches) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, list]]:
        """Per-sequence policy and reference log-probs (float32) and the objective's extra columns of
        each batch, without gradient and in the model's current train/eval mode."""
        logps, refs, extras = [], [], defaultdict(list)
        for raw in batches:
            inputs = self._prepare_inputs(raw)
            with self.compute_loss_context_manager():
                logps.append(sequence_logps(self.model_wrapped, inputs, self.n_per_example).float())
            refs.append(self.reference_logps(inputs).float())
            for k, v in self._extras(inputs).items():
                extras[k].append(v)
        return logps, refs, extras

    # ---- phase 3: one micro-batch --------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        self._cached = self._plan.pop(id(inputs), None)
        super().training_step(model, inputs, num_items_in_batch)
        self._cached = None
        return self._reported.to(self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps = sequence_logps(model, inputs, self.n_per_example)
        if self._cached is not None:
            cached = self._cached
            self._reported = cached.report
            return (logps.float() * cached.grad).sum() * world()[1]
        loss, stats = self.objective(logps.float(), self.reference_logps(inputs).float(), self._extras(inputs))
        if not model.training:
            return loss
        self._record(stats)
        loss = loss / self.current_gradient_accumulation_steps
        self._reported = loss.detach()
        return loss

    # ---- evaluation on the whole held-out set ------------------------------------------------
    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Objective and metrics on the **whole** evaluation set at once (one global batch)."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self.prepare_dataset(eval_dataset)
            if self.args.precompute_ref_log_probs and "ref_logps" not in eval_dataset.column_names:
                eval_dataset = self._precompute_ref(eval_dataset)
        loader = self.get_eval_dataloader(eval_dataset)
        model = self.model_wrapped
        was_training = model.training
        model.eval()
        logps, refs, extras = self._sequence_scalars(loader)
        model.train(was_training)
        all_extras = {k: gather_cat(torch.cat(v))[0] for k, v in extras.items()}
        loss, stats = self.objective(gather_cat(torch.cat(logps))[0], gather_cat(torch.cat(refs))[0], all_extras)
        metrics = {f"{metric_key_prefix}_loss": float(loss)}
        metrics.update({f"{metric_key_prefix}_{k}": float(v) for k, v in stats.items()})
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---- logging -----------------------------------------------------------------------------
    def _record(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            v = float(v)
            if math.isfinite(v):
                self._metrics[k].append(v)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if not any(k.startswith("eval_") for k in logs):
            logs.update({k: sum(v) / len(v) for k, v in self._metrics.items() if v})
            self._metrics.clear()
        super().log(logs, start_time)
