"""Online multi-reward dominance trainer: TRL GRPO with one "dominance aggregator" reward (DESIGN.md §3.2).

The policy generates ``G`` completions per prompt (TRL), the reward bank scores each on ``d``
attributes, and :class:`DominanceReward` -- the single reward function handed to ``trl.GRPOTrainer``
(public API only, TRL 1.16) -- turns the reward vectors into potentials:

1. score the local completions, ``(n_local, d)`` (NaN where the bank masked a sample);
2. gather the reward vectors and baseline points of **all** processes (``multidom.trainers.distributed``), so the
   dominance is measured on the global generation batch; TRL keeps each prompt's ``G`` generations
   consecutive in that order;
3. normalise against the baseline and compute ``phi = n dD(P ≽ Q)/dw`` per prompt (``(B, G, d)`` vs
   ``(B, M, d)``, batched) or pooled (:mod:`multidom.objectives.online`);
4. return ``-phi`` for the local slice; with ``scale_rewards="none"`` TRL's group-centred advantage is then
   exactly ``A = -(phi - mean_group phi)``.

Masked samples return ``None``: TRL turns it into NaN, leaves NaN rows out of the (nan-aware) group mean and
sets their advantage to ``nan_to_num(NaN) = 0`` -- they contribute no policy-gradient term (the per-token KL
penalty still applies to their tokens). Prompts without a usable baseline, or whose generations are all
masked, return ``0.0`` for their valid samples (advantage 0) and are counted in
``dominance/skipped_prompts``. Generation, clipping, KL (``beta``), PEFT, vLLM and DeepSpeed stay TRL's.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from trl import GRPOTrainer

from multidom.trainers.distributed import gather_cat, world
from multidom.objectives.online import dominance_potentials, make_violation, normalise
from multidom.tracking import JsonlMetrics
from multidom.trainers.online_baseline import (
    RollingBuffer,
    Scorer,
    add_baseline_column,
    as_bank,
    prompt_key,
    sample_completions,
    score_rows,
)
from multidom.trainers.online_config import OnlineDominanceConfig
from multidom.trainers.online_logging import cloud_stats, eps_per_prompt, log_wandb, scatter_clouds

__all__ = ["DominanceReward", "MultiDomTrainer", "OnlineDominanceConfig", "run_from_config"]

ALL_ESTIMATORS = ("quantile", "sliced", "sinkhorn")


def _baseline_tensor(column: list | None, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample baseline points from the dataset column: ``(n, M, d)`` and mask ``(n, M)``."""
    if column is None:
        raise ValueError("the batch has no baseline column; prepare the dataset with MultiDomTrainer "
                         "(baseline_source 'reference' or 'dataset') or add the column yourself")
    m = max(max((len(c) for c in column), default=0), 1)
    bad = next((len(v) for rows in column for v in rows if len(v) != d), None)
    if bad is not None:
        raise ValueError(f"the baseline has d = {bad} attributes but the reward bank gives d = {d}")
    pad = [math.nan] * d
    pts = torch.tensor([[[math.nan if x is None else x for x in v] for v in rows] + [pad] * (m - len(rows))
                        for rows in column], dtype=torch.float32).reshape(n, m, d)
    return pts, torch.isfinite(pts).all(-1)


def _comm_device() -> torch.device:
    """Where collectives need their tensors: the current CUDA device under NCCL, else the CPU."""
    if world()[1] > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather(t: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """:func:`multidom.trainers.distributed.gather_cat` on the collective's device; the result comes back on the CPU."""
    out, local = gather_cat(t.to(_comm_device()))
    return out.cpu(), local


def _gather_padded(pts: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather ``(n_r, M_r, d)`` points and masks over ranks, padding ``M`` to the largest."""
    if world()[1] > 1:
        m = torch.tensor([pts.shape[1]], device=_comm_device())
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
        pad = int(m) - pts.shape[1]
        if pad:
            pts = torch.cat([pts, pts.new_full((pts.shape[0], pad, pts.shape[2]), math.nan)], 1)
            mask = torch.cat([mask, mask.new_zeros((mask.shape[0], pad))], 1)
    return _gather(pts)[0], _gather(mask.to(torch.uint8))[0].bool()


class DominanceReward:
    """The TRL reward function that returns ``-phi`` (see the module docstring).

    Args:
        scorer: the reward bank (:func:`multidom.trainers.online_baseline.as_bank`).
        config: the trainer config (estimator, grouping, normalisation, baseline source, ...).
    Attributes:
        last: the global tensors of the last call (``policy``, ``valid``, ``phi``, ``metrics``), for tests.
    """

    def __init__(self, scorer: Scorer, config: OnlineDominanceConfig):
        self.__name__ = "dominance"  # TRL names the reward column after it
        self.scorer, self.config = scorer, config
        self.names = scorer.names
        self.buffer = RollingBuffer(config.buffer_steps) if config.baseline_source == "buffer" else None
        self.trainer: GRPOTrainer | None = None
        self.reference: Any = None  # the model that resamples the baseline (baseline_refresh_steps > 0)
        self.last: dict[str, Any] = {}
        self._calls = 0
        self._fresh: dict[str, list] = {}

    def _num_generations(self) -> int:
        t = self.trainer
        if t is not None and not t.model.training and self.config.num_generations_eval:
            return int(self.config.num_generations_eval)
        return int(self.config.num_generations)

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **kwargs: Any):
        log_metric, log_extra = kwargs.pop("log_metric", None), kwargs.pop("log_extra", None)
        state = kwargs.pop("trainer_state", None)
        kwargs.pop("environments", None)
        step = int(state.global_step) if state is not None else self._calls
        self._calls += 1
        cfg, d, n = self.config, len(self.names), len(completions)

        t0 = time.perf_counter()
        column = kwargs.pop(cfg.baseline_rewards_column, None)
        if self.buffer is None and column is not None:
            column = self._refreshed(step, prompts, column, kwargs)
        values = self.scorer(prompts, completions, completion_ids=completion_ids, **kwargs)
        t_rewards = time.perf_counter() - t0

        x_all, local = _gather(values)
        if self.buffer is None:
            y_pts, y_mask = _gather_padded(*_baseline_tensor(column, n, d))
        G = self._num_generations()
        N = x_all.shape[0]
        if N % G:
            raise ValueError(f"the global batch has {N} completions, not a multiple of num_generations = {G}")
        B = N // G
        x = x_all.reshape(B, G, d)
        xm = torch.isfinite(x).all(-1)
        if self.buffer is None:
            y, ym = y_pts[::G], y_mask[::G]  # each prompt's baseline, read from its first generation
        else:
            cloud = self.buffer.cloud(d)
            y = cloud.expand(B, *cloud.shape) if cloud.shape[0] else x.new_full((B, 1, d), math.nan)
            ym = torch.isfinite(y).all(-1)

        t1 = time.perf_counter()
        metrics: dict[str, float] = {
            "dominance/masked_fraction": float(1 - xm.float().mean()),
        }
        phi = torch.zeros(B, G)
        valid = torch.zeros(B, G, dtype=torch.bool)
        active = torch.zeros(B, dtype=torch.bool)
        if ym.any() and xm.any():
            xn, yn = normalise(x, y, ym, cfg.normalisation)
            kwargs_v = cfg.violation_kwargs(step)
            pot = dominance_potentials(xn, xm, yn, ym, make_violation(cfg.estimator, **kwargs_v), cfg.grouping)
            phi, valid, active = pot.phi.float(), pot.valid, pot.active
            metrics[f"dominance/{cfg.estimator}/violation"] = float(pot.violation)
            t_dom = time.perf_counter() - t1
            estimators = ALL_ESTIMATORS if cfg.all_estimators_steps and step % cfg.all_estimators_steps == 0 else ()
            if pot.eps is not None:  # from the potentials' own solve (tie slope), no second solve
                metrics[f"dominance/{cfg.estimator}/eps"] = float(pot.eps.mean())
            for est in dict.fromkeys((cfg.estimator, *estimators)):
                if f"dominance/{est}/eps" not in metrics:
                    metrics[f"dominance/{est}/eps"] = eps_per_prompt(xn, xm, yn, ym, est, cfg.grouping,
                                                                     **kwargs_v)
        else:
            t_dom = time.perf_counter() - t1
        metrics["timing/eps_s"] = time.perf_counter() - t1 - t_dom
        metrics["dominance/skipped_prompts"] = float(B - int(active.sum()))
        metrics["timing/rewards_s"] = t_rewards
        metrics["timing/dominance_s"] = t_dom
        metrics.update(cloud_stats(x[xm], self.names))
        metrics.update(cloud_stats(y[ym] if self.buffer is not None else y_pts[y_mask], self.names, "baseline_"))
        if self.buffer is not None:
            self.buffer.push(x[xm])

        flat_phi, flat_valid = phi.reshape(-1)[local], valid.reshape(-1)[local]
        finite = xm.reshape(-1)[local]
        rewards = [(-float(p) if v else (0.0 if f else None)) for p, v, f in zip(flat_phi, flat_valid, finite)]
        self.last = {"policy": x, "valid": valid, "phi": phi, "active": active, "metrics": metrics}
        if log_metric is not None:
            for key, val in metrics.items():
                if not math.isnan(val):
                    log_metric(key, val)
        if log_extra is not None:
            for k, name in enumerate(self.names):
                log_extra(name, values[:, k].tolist())
        self._maybe_plot(step, x[xm], y[ym] if self.buffer is not None else y_pts[y_mask], prompts, completions,
                         values, rewards)
        return rewards

    def _refreshed(self, step: int, prompts: list, column: list, columns: dict) -> list:
        """Every ``baseline_refresh_steps`` steps, resample the reference baseline of this batch's prompts
        (each process its own rows; the prompt group's first row is used after the gather, so every process
        agrees). Later batches of the same prompt reuse the fresh points."""
        cfg = self.config
        k = cfg.baseline_refresh_steps
        if k and self.reference is not None and step % k == 0 and self.trainer is not None:
            first = {prompt_key(p): i for i, p in reversed(list(enumerate(prompts)))}
            rows = sorted(first.values())
            uniq = [prompts[i] for i in rows]
            other = {c: [v[i] for i in rows] for c, v in columns.items() if isinstance(v, list) and len(v) == len(prompts)}
            comps, ids = sample_completions(
                self.reference, self.trainer.processing_class, uniq, cfg.baseline_samples,
                max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature, top_p=cfg.top_p,
                top_k=cfg.top_k or 0,
            )
            for p, vecs in zip(uniq, score_rows(self.scorer, uniq, comps, ids, other)):
                self._fresh[prompt_key(p)] = [v for v in vecs if all(math.isfinite(x) for x in v)]
        if not self._fresh:
            return column
        return [self._fresh.get(prompt_key(p), c) for p, c in zip(prompts, column)]

    def _maybe_plot(self, step, policy, baseline, prompts, completions, values, rewards) -> None:
        cfg = self.config
        if not cfg.plot_steps or step % cfg.plot_steps or world()[0] != 0 or self.trainer is None:
            return
        if policy.shape[0] == 0 or baseline.shape[0] == 0:
            return
        path = Path(cfg.output_dir) / "plots" / f"clouds_{step:06d}.png"
        plot = scatter_clouds(policy, baseline, self.names, path, step)
        log_wandb(step, plot, prompts, completions, values, self.names, rewards)


class MultiDomTrainer(GRPOTrainer):
    """GRPO whose only reward is the dominance aggregator (DESIGN.md §3.2).

    Args:
        model: a model id / local path or a ``PreTrainedModel`` (the reference is its initial state).
        args: :class:`OnlineDominanceConfig`.
        train_dataset: a ``datasets.Dataset`` with a ``prompt`` column (plus the baseline columns the
            chosen ``baseline_source`` needs); the baseline column is added before training.
        reward_bank: a ``reward_models.RewardBank``, a list of reward models / specs / TRL reward
            callables, or ``None`` to build the bank from ``args.rewards``.
        processing_class, eval_dataset, callbacks, peft_config, **kwargs: as ``trl.GRPOTrainer``.
    """

    def __init__(
        self, model: Any, args: OnlineDominanceConfig | None = None, train_dataset: Any = None,
        reward_bank: Any = None, *, processing_class: Any = None, eval_dataset: Any = None,
        callbacks: list | None = None, peft_config: Any = None, **kwargs: Any,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        args = args if args is not None else OnlineDominanceConfig(output_dir="multidom-online")
        if not isinstance(args, OnlineDominanceConfig):
            raise ValueError(f"args must be an OnlineDominanceConfig, got {type(args).__name__}")
        scorer = as_bank(reward_bank if reward_bank is not None else list(args.rewards))
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(
                model, trust_remote_code=args.trust_remote_code, **(args.model_init_kwargs or {})
            )
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(
                model.config._name_or_path, trust_remote_code=args.trust_remote_code
            )
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
        if args.baseline_refresh_steps:
            # the frozen reference: TRL's ref_model when it has one, else a copy of the initial weights
            self.dominance.reference = self.ref_model if self.ref_model is not None else copy.deepcopy(
                self.accelerator.unwrap_model(self.model)).eval().requires_grad_(False)


def run_from_config(config: dict, *, output_dir: str, resume: bool = False) -> dict:
    """The ``trainer: online`` runner (CLI contract); see :mod:`multidom.trainers.online_runner`."""
    from multidom.trainers.online_runner import run

    return run(config, output_dir=output_dir, resume=resume)
