"""Model evaluation by multivariate dominance (DESIGN.md §5): generate or read completions, score them
with a reward bank, compare the reward clouds (eps matrices, absolute and relative tests), write a report.

>>> from multidom.evaluation import evaluate_models
>>> out = evaluate_models({"sft": (ref, tok), "aligned": (policy, tok)}, prompts, bank, G=8,
...                       specs=[EVAL_SPECS["quantile"]], eps0=0.4, alpha=0.05, output_dir="runs/eval", seed=0)
>>> out["dominance"]["quantile"]["eps"][1][0]     # eps(aligned ≽ sft)
"""
from multidom.evaluation.analysis import EVAL_SPECS, EvaluationResult, attribute_stats, eval_specs, evaluate
from multidom.evaluation.completions import load_prompts, read_completions, read_prompts, write_completions
from multidom.evaluation.pipeline import (
    evaluate_completions,
    evaluate_models,
    kl_estimate,
    run_checkpoints,
    same_tokenizer,
    score,
)
from multidom.evaluation.report import log_to_wandb, summary_table, write_report

__all__ = [
    "EVAL_SPECS", "EvaluationResult", "attribute_stats", "eval_specs", "evaluate", "evaluate_completions",
    "evaluate_models", "kl_estimate", "load_prompts", "log_to_wandb", "read_completions", "read_prompts",
    "run_checkpoints", "same_tokenizer", "score", "summary_table", "write_completions", "write_report",
]
