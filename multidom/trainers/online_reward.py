"""The dominance aggregator: the one reward function the online trainer hands to TRL (DESIGN.md §3.2).

One call, in named steps:

1. :meth:`DominanceReward._score` -- score the local completions with the bank, ``(n_local, d)``
   (NaN where the bank masked a sample);
2. :meth:`DominanceReward._clouds` -- gather the reward vectors and baseline points of **all**
   processes (:mod:`multidom.trainers.distributed`), so dominance is measured on the global generation
   batch; TRL keeps each prompt's ``G`` generations consecutive in that order; reshape to
   ``(B, G, d)`` policy and ``(B, M, d)`` baseline clouds;
3. :func:`multidom.objectives.online.dominance_potentials` -- normalise against the baseline and
   compute ``phi = n dD(P ≽ Q)/dw`` per prompt or pooled, as the run's
   :class:`~multidom.core.spec.DominanceSpec` says;
4. :meth:`DominanceReward._metrics` -- eps of the estimators to log, cloud statistics, timings;
5. :meth:`DominanceReward._rewards` -- ``-phi`` for the local slice; with ``scale_rewards="none"`` TRL's
   group-centred advantage is then exactly ``A = -(phi - mean_group phi)``.

Masked samples return ``None``: TRL turns it into NaN, leaves NaN rows out of the (nan-aware) group
mean and sets their advantage to ``nan_to_num(NaN) = 0``. Prompts without a usable baseline, or whose
generations are all masked, return ``0.0`` for their valid samples and are counted in
``dominance/skipped_prompts``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multidom.objectives.online import Potentials, dominance_potentials
from multidom.trainers.distributed import gather_padded, gather_to_cpu, world
from multidom.trainers.online_baseline import RollingBuffer, Scorer, prompt_key, sample_reference, score_rows
from multidom.trainers.online_config import OnlineDominanceConfig
from multidom.trainers.online_logging import cloud_stats, eps_per_prompt, log_wandb, scatter_clouds

__all__ = ["DominanceReward", "Clouds", "ALL_ESTIMATORS"]

#: Estimators whose eps is logged every ``all_estimators_steps`` steps.
ALL_ESTIMATORS = ("quantile", "sliced", "sinkhorn")


@dataclass
class Clouds:
    """The global batch's clouds: policy ``x (B, G, d)`` with mask ``xm (B, G)``; baseline ``y (B, M, d)``
    with mask ``ym (B, M)``; ``local``: this process's slice of the flattened ``B * G`` samples."""

    x: torch.Tensor
    xm: torch.Tensor
    y: torch.Tensor
    ym: torch.Tensor
    local: slice


def _baseline_tensor(column: list | None, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample baseline points from the dataset column: ``(n, M, d)`` and mask ``(n, M)``."""
    if column is None:
        raise ValueError("the batch has no baseline column; prepare the dataset with OnlineDominanceTrainer "
                         "(baseline_source 'reference' or 'dataset') or add the column yourself")
    m = max(max((len(c) for c in column), default=0), 1)
    bad = next((len(v) for rows in column for v in rows if len(v) != d), None)
    if bad is not None:
        raise ValueError(f"the baseline has d = {bad} attributes but the reward bank gives d = {d}")
    pad = [math.nan] * d
    pts = torch.tensor([[[math.nan if x is None else x for x in v] for v in rows] + [pad] * (m - len(rows))
                        for rows in column], dtype=torch.float32).reshape(n, m, d)
    return pts, torch.isfinite(pts).all(-1)


class DominanceReward:
    """The TRL reward function that returns ``-phi`` (see the module docstring).

    Args:
        scorer: the reward bank (:func:`multidom.trainers.online_baseline.as_bank`).
        config: the trainer config (its ``dominance`` spec, grouping, baseline source, ...).
    Attributes:
        last: the global tensors of the last call (``policy``, ``valid``, ``phi``, ``metrics``), for tests.
    """

    def __init__(self, scorer: Scorer, config: OnlineDominanceConfig):
        self.__name__ = "dominance"  # TRL names the reward column after it
        self.scorer, self.config = scorer, config
        self.names = scorer.names
        self.buffer = RollingBuffer(config.buffer_steps) if config.baseline_source == "buffer" else None
        self.trainer: Any = None
        self.reference: Any = None  # the model that resamples the baseline (baseline_refresh_steps > 0)
        self.last: dict[str, Any] = {}
        self._calls = 0
        self._fresh: dict[str, list] = {}
        self._dead = torch.zeros(len(self.names), dtype=torch.long)  # consecutive steps without a finite score

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **kwargs: Any):
        log_metric, log_extra = kwargs.pop("log_metric", None), kwargs.pop("log_extra", None)
        state = kwargs.pop("trainer_state", None)
        kwargs.pop("environments", None)
        step = int(state.global_step) if state is not None else self._calls
        self._calls += 1
        t0 = time.perf_counter()
        column = kwargs.pop(self.config.baseline_rewards_column, None)
        if self.buffer is None and column is not None:
            column = self._refreshed(step, prompts, column, kwargs)
        values = self.scorer(prompts, completions, completion_ids=completion_ids, **kwargs)
        timings = {"timing/rewards_s": time.perf_counter() - t0}
        clouds = self._clouds(values, column)
        self._check_alive(clouds)
        t1 = time.perf_counter()
        pot = self._potentials(clouds, step)
        timings["timing/dominance_s"] = time.perf_counter() - t1
        metrics = self._metrics(clouds, pot, step, timings)
        rewards = self._rewards(clouds, pot)
        if self.buffer is not None:
            self.buffer.push(clouds.x[clouds.xm])
        self.last = {"policy": clouds.x, "valid": pot.valid, "phi": pot.phi, "active": pot.active, "metrics": metrics}
        self._log(metrics, values, log_metric, log_extra)
        self._maybe_plot(step, clouds, prompts, completions, values, rewards)
        return rewards

    # ---- steps -------------------------------------------------------------------------------
    def _num_generations(self) -> int:
        t = self.trainer
        if t is not None and not t.model.training and self.config.num_generations_eval:
            return int(self.config.num_generations_eval)
        return int(self.config.num_generations)

    def _clouds(self, values: torch.Tensor, column: list | None) -> Clouds:
        """Gather every process's points and shape them ``(B, G, d)`` / ``(B, M, d)``."""
        d, n = len(self.names), values.shape[0]
        x_all, local = gather_to_cpu(values)
        G = self._num_generations()
        if x_all.shape[0] % G:
            raise ValueError(f"the global batch has {x_all.shape[0]} completions, not a multiple of "
                             f"num_generations = {G}")
        B = x_all.shape[0] // G
        x = x_all.reshape(B, G, d)
        if self.buffer is None:
            y_pts, y_mask = gather_padded(*_baseline_tensor(column, n, d))
            y, ym = y_pts[::G], y_mask[::G]  # each prompt's baseline, read from its first generation
        else:
            cloud = self.buffer.cloud(d)
            y = cloud.expand(B, *cloud.shape) if cloud.shape[0] else x.new_full((B, 1, d), math.nan)
            ym = torch.isfinite(y).all(-1)
        return Clouds(x, torch.isfinite(x).all(-1), y, ym, local)

    def _check_alive(self, c: Clouds) -> None:
        """Raise when an attribute had no finite score in the global batch for ``dead_attribute_steps``
        consecutive calls: one dead reward model masks every sample and would silently stop all learning."""
        alive = torch.isfinite(c.x).reshape(-1, c.x.shape[-1]).any(0)
        self._dead = torch.where(alive, torch.zeros_like(self._dead), self._dead + 1)
        dead = [name for name, n in zip(self.names, self._dead.tolist()) if n >= self.config.dead_attribute_steps]
        if dead:
            raise RuntimeError(
                f"reward attribute(s) {', '.join(map(repr, dead))} returned no finite score (None/NaN/inf) for any of "
                f"the {c.x.shape[0] * c.x.shape[1]} completions of {self.config.dead_attribute_steps} consecutive "
                "step(s); check that reward model (training.dead_attribute_steps sets the patience)")

    def _potentials(self, c: Clouds, step: int) -> Potentials:
        cfg = self.config
        if not (c.ym.any() and c.xm.any()):
            B, G = c.xm.shape
            return Potentials(torch.zeros(B, G), torch.zeros(B, G, dtype=torch.bool),
                              torch.zeros(B, dtype=torch.bool), torch.zeros(()))
        return dominance_potentials(c.x, c.xm, c.y, c.ym, cfg.dominance, cfg.grouping, **cfg.step_options(step))

    def _metrics(self, c: Clouds, pot: Potentials, step: int, timings: dict[str, float]) -> dict[str, float]:
        """``dominance/<estimator>/{eps,violation}``, skipped/masked counts, cloud statistics, timings."""
        cfg, spec = self.config, self.config.dominance
        metrics: dict[str, float] = {"dominance/masked_fraction": float(1 - c.xm.float().mean()),
                                     "dominance/skipped_prompts": float(pot.active.numel() - int(pot.active.sum()))}
        t0 = time.perf_counter()
        if pot.active.any():
            metrics[f"dominance/{spec.estimator}/violation"] = float(pot.violation)
            if pot.eps is not None:  # from the potentials' own solve (tie slope), no second solve
                metrics[f"dominance/{spec.estimator}/eps"] = float(pot.eps.float().mean())
            every = cfg.all_estimators_steps and step % cfg.all_estimators_steps == 0
            for est in dict.fromkeys((spec.estimator, *(ALL_ESTIMATORS if every else ()))):
                if f"dominance/{est}/eps" not in metrics:
                    other = spec if est == spec.estimator else spec.replace(estimator=est, options={})
                    metrics[f"dominance/{est}/eps"] = eps_per_prompt(c.x, c.xm, c.y, c.ym, other, cfg.grouping,
                                                                     **cfg.step_options(step, est))
        metrics["timing/eps_s"] = time.perf_counter() - t0
        metrics.update(timings)
        metrics.update(cloud_stats(c.x[c.xm], self.names))
        metrics.update(cloud_stats(c.y[c.ym], self.names, "baseline_"))
        return metrics

    @staticmethod
    def _rewards(c: Clouds, pot: Potentials) -> list[float | None]:
        flat_phi, flat_valid = pot.phi.reshape(-1)[c.local], pot.valid.reshape(-1)[c.local]
        finite = c.xm.reshape(-1)[c.local]
        return [(-float(p) if v else (0.0 if f else None)) for p, v, f in zip(flat_phi, flat_valid, finite)]

    def _log(self, metrics: dict[str, float], values: torch.Tensor, log_metric: Any, log_extra: Any) -> None:
        if log_metric is not None:
            for key, val in metrics.items():
                if not math.isnan(val):
                    log_metric(key, val)
        if log_extra is not None:
            for k, name in enumerate(self.names):
                log_extra(name, values[:, k].tolist())

    # ---- baseline refresh and plots ----------------------------------------------------------
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
            other = {c: [v[i] for i in rows] for c, v in columns.items()
                     if isinstance(v, list) and len(v) == len(prompts)}
            with self.reference() as model:
                comps, ids = sample_reference(model, self.trainer.processing_class, uniq, cfg,
                                              seed=int(cfg.seed) + step)
            for p, vecs in zip(uniq, score_rows(self.scorer, uniq, comps, ids, other)):
                self._fresh[prompt_key(p)] = [v for v in vecs if all(math.isfinite(x) for x in v)]
        if not self._fresh:
            return column
        return [self._fresh.get(prompt_key(p), c) for p, c in zip(prompts, column)]

    def _maybe_plot(self, step: int, c: Clouds, prompts, completions, values, rewards) -> None:
        cfg = self.config
        if not cfg.plot_steps or step % cfg.plot_steps or world()[0] != 0 or self.trainer is None:
            return
        policy, baseline = c.x[c.xm], c.y[c.ym]
        if policy.shape[0] == 0 or baseline.shape[0] == 0:
            return
        path = Path(cfg.output_dir) / "plots" / f"clouds_{step:06d}.png"
        plot = scatter_clouds(policy, baseline, self.names, path, step)
        log_wandb(step, plot, prompts, completions, values, self.names, rewards)
