"""Model evaluation by multivariate dominance (DESIGN.md §5): generate or read completions, score them
with a reward bank, compare the reward clouds (eps matrices, absolute and relative tests), write a report.

>>> from multidom.evaluation import evaluate_models
>>> out = evaluate_models({"sft": (ref, tok), "aligned": (policy, tok)}, prompts, bank, G=8,
...                       estimators=["quantile", "sinkhorn"], eps0=0.4, alpha=0.05, output_dir="runs/eval", seed=0)
>>> out["dominance"]["sinkhorn"]["eps"][1][0]     # eps(aligned ≽ sft)
"""
from multidom.evaluation.analysis import EvaluationResult, attribute_stats, evaluate
from multidom.evaluation.completions import load_prompts, read_completions, read_prompts, write_completions
from multidom.evaluation.generation import Generations, generate, kl_estimate, sequence_logprobs
from multidom.evaluation.report import log_to_wandb, summary_table, write_report
from multidom.evaluation.runner import (
    EvaluateConfig,
    evaluate_completions,
    evaluate_models,
    load_model,
    run_checkpoints,
    run_from_config,
    score,
)

__all__ = [
    "EvaluateConfig",
    "EvaluationResult",
    "Generations",
    "attribute_stats",
    "evaluate",
    "evaluate_completions",
    "evaluate_models",
    "generate",
    "kl_estimate",
    "load_model",
    "load_prompts",
    "log_to_wandb",
    "read_completions",
    "read_prompts",
    "run_checkpoints",
    "run_from_config",
    "score",
    "sequence_logprobs",
    "summary_table",
    "write_completions",
    "write_report",
]
