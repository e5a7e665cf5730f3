"""Evaluation pipelines: generate (or read) completions, score them with a bank, compare, report.

* :func:`evaluate_models` -- models already in memory (the quickstart and ``multidom evaluate`` call this).
* :func:`evaluate_completions` -- completions already sampled (e.g. read from a JSONL file).
* :func:`kl_estimate` -- ``KL(model || reference)`` on the model's own samples.

Generation is :func:`multidom.lm.generation.generate` (seeded, formatted as TRL formats prompts) and the
log-probabilities behind the KL are :func:`multidom.lm.logprobs.logps_of_pairs`, computed on exactly
the sampled tokens:

    KL(pi_m || pi_ref) = E_{x, y ~ pi_m}[ log pi_m(y|x) - log pi_ref(y|x) ]
                      ~= (1 / (B G)) sum_{i, j} ( log pi_m(y_ij|x_i) - log pi_ref(y_ij|x_i) ),

a sequence-level Monte-Carlo estimate (unbiased when sampling at temperature 1 without top-p/top-k
truncation; otherwise it is the log-ratio under the truncated sampler).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from multidom.core.spec import DominanceSpec
from multidom.evaluation.analysis import EVAL_SPECS, evaluate
from multidom.evaluation.completions import write_completions
from multidom.evaluation.report import log_to_wandb, summary_table, write_report
from multidom.lm.generation import Generations, Sampling, generate
from multidom.lm.logprobs import logps_of_pairs

__all__ = ["score", "evaluate_models", "evaluate_completions", "run_checkpoints", "kl_estimate", "same_tokenizer",
           "DEFAULT_SPECS"]

#: The estimators reported when none are chosen.
DEFAULT_SPECS: tuple[DominanceSpec, ...] = (EVAL_SPECS["quantile"], EVAL_SPECS["sinkhorn"])


def kl_estimate(model: Any, reference: Any, generations: Generations, *, batch_size: int = 16) -> dict[str, float]:
    """Monte-Carlo ``KL(model || reference)`` on ``generations`` sampled from ``model`` (module docstring).

    Returns ``{"kl": mean, "kl_se": se}`` where ``se`` is the standard error over prompts (the
    ``G`` samples of a prompt are averaged first, prompts being the independent units).
    """
    flat_p = [p for p, row in zip(generations.prompt_ids, generations.completion_ids) for _ in row]
    flat_c = [c for row in generations.completion_ids for c in row]
    diff = logps_of_pairs(model, flat_p, flat_c, batch_size=batch_size) - logps_of_pairs(
        reference, flat_p, flat_c, batch_size=batch_size)
    per_prompt = diff.view(len(generations.prompt_ids), -1).mean(-1)
    n = per_prompt.numel()
    se = float(per_prompt.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {"kl": float(per_prompt.mean()), "kl_se": se}


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (same vocabulary), so log-ratios make sense."""
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


def run_checkpoints(run_dir: str | Path) -> list[dict[str, str]]:
    """``[{name: checkpoint-N, path}, ..., {name: final, path}]`` of a training output directory, by step
    (``final/`` last when present; nested ``align/`` runs of the quickstart are searched too)."""
    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoints: no such run directory: {root}")
    found = [p for p in root.glob("**/checkpoint-*") if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]
    found.sort(key=lambda p: int(p.name.removeprefix("checkpoint-")))
    models = [{"name": p.name, "path": str(p)} for p in found]
    if (root / "final").is_dir():
        models.append({"name": "final", "path": str(root / "final")})
    if not models:
        raise FileNotFoundError(f"checkpoints: {root} holds no checkpoint-N or final folder")
    return models


def score(bank: Any, prompts: Sequence[Any], completions: Sequence[Sequence[str]]) -> tuple[torch.Tensor, list[str]]:
    """Score ``B x G`` completions with a :class:`reward_models.RewardBank`: ``((B, G, d) float64, names)``.

    Values are oriented higher-is-better and not normalised (raw); NaN where the bank masked a score.
    """
    B = len(prompts)
    G = len(completions[0]) if B else 0
    if len(completions) != B or any(len(row) != G for row in completions):
        raise ValueError(f"completions must be {B} rows of the same length G")
    flat_p = [p for p, row in zip(prompts, completions) for _ in row]
    flat_c = [c for row in completions for c in row]
    scores = bank.score(flat_p, flat_c, normalized=False) if hasattr(bank, "score") else bank(flat_p, flat_c)
    values = getattr(scores, "raw", scores.values)
    return values.double().reshape(B, G, -1), list(scores.names)


def _finish(
    prompts: Sequence[Any], completions: dict[str, list[list[str]]], bank: Any, output_dir: str | Path, *,
    kl: dict[str, dict[str, float]] | None, specs: Sequence[DominanceSpec], eps0: float, alpha: float, seed: int,
    level: float, n_boot: int, html: bool, report_to: Sequence[str],
    wandb_project: str, run_name: str | None, training_metrics: str | Path | None = None,
) -> dict[str, Any]:
    out = Path(output_dir)
    write_completions(out / "completions.jsonl", completions, prompts)
    rewards, names = {}, []
    for model, rows in completions.items():
        rewards[model], names = score(bank, prompts, rows)
    result = evaluate(rewards, names, specs=specs, eps0=eps0, alpha=alpha, level=level, n_boot=n_boot,
                      seed=seed, kl=kl)
    paths = write_report(result, rewards, out, html_report=html, training_rows=_training_rows(training_metrics),
                         extra={"completions": str(out / "completions.jsonl")})
    wandb_dir = None
    if "wandb" in report_to:
        wandb_dir = log_to_wandb(result, paths, out, project=wandb_project, run_name=run_name)
    return {**result.to_dict(), "report": paths["markdown"], "paths": paths, "wandb_dir": wandb_dir,
            "summary_text": summary_table(result)}


def _training_rows(path: str | Path | None) -> list[dict] | None:
    if path is None:
        return None
    p = Path(path)
    p = p / "metrics.jsonl" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"training metrics not found: {p}")
    from multidom.trainers.tracking import read_metrics

    return list(read_metrics(p))


def evaluate_models(
    models: Mapping[str, tuple[Any, Any]],
    prompts: Sequence[Any],
    bank: Any,
    *,
    G: int = 8,
    specs: Sequence[DominanceSpec] = DEFAULT_SPECS,
    sampling: Sampling | None = None,
    eps0: float = 0.4,
    alpha: float = 0.05,
    output_dir: str | Path = "runs/evaluate",
    seed: int = 0,
    level: float = 0.9,
    n_boot: int = 200,
    batch_size: int = 16,
    html: bool = False,
    report_to: Sequence[str] = (),
    wandb_project: str = "multidom",
    run_name: str | None = None,
    training_metrics: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample ``G`` completions per prompt from each model, score them with ``bank``, compare, report.

    Args:
        models: ``{name: (model, tokenizer)}``, ``k >= 2``; the first is the reference (KL and
            ``Δ mean`` are relative to it). Every model sees the same prompts and seed.
        prompts: ``B`` held-out prompts (strings or chat-message lists).
        bank: a :class:`reward_models.RewardBank` (raw, oriented scores are used).
        specs: one :class:`~multidom.core.spec.DominanceSpec` per estimator reported.
        sampling: generation settings (:class:`multidom.lm.generation.Sampling`; default 48 new tokens).
        Other arguments: :func:`multidom.evaluation.analysis.evaluate`.
    Returns:
        the :class:`~multidom.evaluation.analysis.EvaluationResult` as a dict, plus ``report`` (path of
        report.md), ``paths`` (every file written), ``wandb_dir`` and ``summary_text`` (terminal table).
    """
    if len(models) < 2:
        raise ValueError(f"evaluate_models compares at least 2 models, got {len(models)}")
    gens = {
        name: generate(model, tok, prompts, G, sampling=sampling or Sampling(max_new_tokens=48),
                       batch_size=batch_size, seed=seed, progress=progress, desc=f"generate {name}")
        for name, (model, tok) in models.items()
    }
    ref_name = next(iter(models))
    ref_model, ref_tok = models[ref_name]
    kl = {}
    for name, (model, tok) in models.items():
        if same_tokenizer(tok, ref_tok):
            kl[name] = kl_estimate(model, ref_model, gens[name], batch_size=batch_size)
    return _finish(prompts, {n: g.texts() for n, g in gens.items()}, bank, output_dir, kl=kl,
                   specs=specs, eps0=eps0, alpha=alpha, seed=seed, level=level, n_boot=n_boot, html=html, report_to=report_to, wandb_project=wandb_project, run_name=run_name,
                   training_metrics=training_metrics)


def evaluate_completions(
    prompts: Sequence[Any], completions: Mapping[str, Sequence[Sequence[str]]], bank: Any, *,
    output_dir: str | Path = "runs/evaluate", specs: Sequence[DominanceSpec] = DEFAULT_SPECS,
    eps0: float = 0.4, alpha: float = 0.05, seed: int = 0, level: float = 0.9, n_boot: int = 200, html: bool = False,
    report_to: Sequence[str] = (), wandb_project: str = "multidom", run_name: str | None = None,
    training_metrics: str | Path | None = None,
) -> dict[str, Any]:
    """Like :func:`evaluate_models` on completions already sampled: ``{model: B x G texts}`` (no KL)."""
    return _finish(prompts, {k: [list(r) for r in v] for k, v in completions.items()}, bank, output_dir, kl=None,
                   specs=specs, eps0=eps0, alpha=alpha, seed=seed, level=level, n_boot=n_boot, html=html, report_to=report_to, wandb_project=wandb_project, run_name=run_name,
                   training_metrics=training_metrics)
