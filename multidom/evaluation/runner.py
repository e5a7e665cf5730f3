"""End-to-end evaluation: generate (or read) completions, score them with a bank, compare, report.

* :func:`evaluate_models` -- models already in memory (the quickstart calls this).
* :func:`evaluate_completions` -- completions already sampled (e.g. read from a JSONL file).
* :func:`run_from_config` -- what ``multidom evaluate`` runs: a YAML/flags mapping -> :class:`EvaluateConfig`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from multidom.config import ConfigError, from_mapping, unknown_key_message
from multidom.evaluation.analysis import NORMALIZERS, evaluate
from multidom.evaluation.completions import load_prompts, read_completions, write_completions
from multidom.evaluation.generation import generate, kl_estimate, same_tokenizer
from multidom.evaluation.report import log_to_wandb, summary_table, write_report

__all__ = ["EvaluateConfig", "score", "evaluate_models", "evaluate_completions", "load_model", "run_checkpoints",
           "run_from_config"]


@dataclass
class EvaluateConfig:
    """Options of ``multidom evaluate`` (YAML keys; flags of the same name override them)."""

    models: list = field(default_factory=list)
    """models or checkpoints: [{name, path}] or {name: path}; the first is the reference."""
    checkpoints: str | None = None
    """a training output dir: its checkpoint-N folders (by step) and final/ are added after ``models``."""
    prompts: Any = None
    """held-out prompts: a .txt/.jsonl file, a list, or {path, split, column, limit} of a dataset."""
    completions: str | None = None
    """JSONL file of completions to score instead of generating (see multidom.evaluation.completions)."""
    rewards: list = field(default_factory=list)
    """reward bank: registry names or ``{type: ..., ...}`` specs (``multidom rewards list``)."""
    num_generations: int = 8
    """G, completions sampled per prompt and model."""
    max_prompts: int | None = None
    """use only the first N prompts."""
    estimators: list = field(default_factory=lambda: ["quantile", "sinkhorn"])
    """violation estimators: quantile | sliced | sinkhorn | exact."""
    cost: str = "hinge"
    """violation cost h (hinge | squared_hinge | logistic | least_squares)."""
    estimator_options: dict = field(default_factory=dict)
    """per-estimator options, e.g. {sinkhorn: {reg: 0.05}, sliced: {n_directions: 128}}."""
    normalize: str = "zscore"
    """attribute normalisation against the reference before the ratios: zscore | none."""
    eps0: float = 0.4
    """threshold of the absolute test (H0: eps >= eps0)."""
    alpha: float = 0.05
    """level of the absolute and relative tests."""
    level: float = 0.9
    """coverage of the bootstrap intervals."""
    n_boot: int = 200
    """bootstrap replicates over prompts."""
    seed: int = 0
    """seed of sampling and bootstrap."""
    max_new_tokens: int = 48
    """generation length limit."""
    temperature: float = 1.0
    """sampling temperature (1.0 keeps the KL estimate unbiased)."""
    top_p: float = 1.0
    """nucleus sampling (1.0 keeps the KL estimate unbiased)."""
    batch_size: int = 16
    """prompts per generation batch."""
    device: str = "auto"
    """cpu | cuda | auto."""
    trust_remote_code: bool = False
    """allow models' own code (off unless you trust them; DESIGN.md §7)."""
    html: bool = False
    """also write report.html."""
    training_metrics: str | None = None
    """a training run's metrics.jsonl (or its output dir): eps and reward means over steps in the report."""
    report_to: list = field(default_factory=list)
    """["wandb"] to log the report (offline unless a key is configured)."""
    wandb_project: str = "multidom"
    """wandb project name."""
    run_name: str | None = None
    """wandb run name."""

    def __post_init__(self) -> None:
        if isinstance(self.models, Mapping):
            self.models = [{"name": k, "path": v} for k, v in self.models.items()]
        if self.checkpoints is not None:
            self.models = [*self.models, *run_checkpoints(self.checkpoints)]
        for key in ("estimators", "report_to"):
            if isinstance(getattr(self, key), str):
                setattr(self, key, [getattr(self, key)])
        if not 0.0 < self.eps0 < 1.0 or not 0.0 < self.alpha < 1.0 or not 0.0 < self.level < 1.0:
            raise ConfigError("eps0, alpha and level must each lie in (0, 1)")
        if self.num_generations < 1:
            raise ConfigError(f"num_generations must be >= 1, got {self.num_generations}")
        if not self.rewards:
            raise ConfigError("no reward models: set rewards (e.g. rewards: [sentiment, brevity]) or pass --reward")
        if self.completions is None and len(self.models) < 2:
            raise ConfigError("evaluate needs at least 2 models (--model NAME=PATH, the first is the reference) "
                              "or a completions file")
        if self.completions is None and self.prompts is None:
            raise ConfigError("no prompts: set prompts (a file or a list) or pass --prompts")
        for m in self.models:
            if not isinstance(m, Mapping) or set(m) - {"name", "path"} or "path" not in m:
                raise ConfigError(f"each model is {{name: ..., path: ...}}, got {m!r}")
        from multidom.core.estimators import ESTIMATORS

        for est in [*self.estimators, *self.estimator_options]:
            if est not in ESTIMATORS:
                raise ConfigError(unknown_key_message(str(est), ESTIMATORS).replace("unknown key", "unknown estimator", 1))
        if self.normalize not in NORMALIZERS:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZERS)}, got {self.normalize!r}")


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
    kl: dict[str, dict[str, float]] | None, estimators: Sequence[str], eps0: float, alpha: float, seed: int,
    level: float, n_boot: int, normalize: str, violation_options: Mapping[str, Any] | None,
    estimator_options: Mapping[str, Mapping[str, Any]] | None, html: bool, report_to: Sequence[str],
    wandb_project: str, run_name: str | None, training_metrics: str | Path | None = None,
) -> dict[str, Any]:
    out = Path(output_dir)
    write_completions(out / "completions.jsonl", completions, prompts)
    rewards, names = {}, []
    for model, rows in completions.items():
        rewards[model], names = score(bank, prompts, rows)
    result = evaluate(rewards, names, estimators=estimators, eps0=eps0, alpha=alpha, level=level, n_boot=n_boot,
                      seed=seed, normalize=normalize, violation_options=violation_options,
                      estimator_options=estimator_options, kl=kl)
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
    from multidom.tracking import read_metrics

    return list(read_metrics(p))


def evaluate_models(
    models: Mapping[str, tuple[Any, Any]],
    prompts: Sequence[Any],
    bank: Any,
    *,
    G: int = 8,
    estimators: Sequence[str] = ("quantile", "sinkhorn"),
    eps0: float = 0.4,
    alpha: float = 0.05,
    output_dir: str | Path = "runs/evaluate",
    seed: int = 0,
    level: float = 0.9,
    n_boot: int = 200,
    normalize: str = "zscore",
    violation_options: Mapping[str, Any] | None = None,
    estimator_options: Mapping[str, Mapping[str, Any]] | None = None,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    top_p: float = 1.0,
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
        Other arguments: :class:`EvaluateConfig` and :func:`multidom.evaluation.analysis.evaluate`.
    Returns:
        the :class:`~multidom.evaluation.analysis.EvaluationResult` as a dict, plus ``report`` (path of
        report.md), ``paths`` (every file written), ``wandb_dir`` and ``summary_text`` (terminal table).
    """
    if len(models) < 2:
        raise ValueError(f"evaluate_models compares at least 2 models, got {len(models)}")
    gens = {
        name: generate(model, tok, prompts, G, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       batch_size=batch_size, seed=seed, progress=progress, desc=f"generate {name}")
        for name, (model, tok) in models.items()
    }
    ref_name = next(iter(models))
    ref_model, ref_tok = models[ref_name]
    kl = {}
    for name, (model, tok) in models.items():
        if same_tokenizer(tok, ref_tok):
            kl[name] = kl_estimate(model, ref_model, gens[name], batch_size=batch_size)
    return _finish(prompts, {n: g.completions for n, g in gens.items()}, bank, output_dir, kl=kl,
                   estimators=estimators, eps0=eps0, alpha=alpha, seed=seed, level=level, n_boot=n_boot,
                   normalize=normalize, violation_options=violation_options, estimator_options=estimator_options,
                   html=html, report_to=report_to, wandb_project=wandb_project, run_name=run_name,
                   training_metrics=training_metrics)


def evaluate_completions(
    prompts: Sequence[Any], completions: Mapping[str, Sequence[Sequence[str]]], bank: Any, *,
    output_dir: str | Path = "runs/evaluate", estimators: Sequence[str] = ("quantile", "sinkhorn"),
    eps0: float = 0.4, alpha: float = 0.05, seed: int = 0, level: float = 0.9, n_boot: int = 200,
    normalize: str = "zscore", violation_options: Mapping[str, Any] | None = None,
    estimator_options: Mapping[str, Mapping[str, Any]] | None = None, html: bool = False,
    report_to: Sequence[str] = (), wandb_project: str = "multidom", run_name: str | None = None,
    training_metrics: str | Path | None = None,
) -> dict[str, Any]:
    """Like :func:`evaluate_models` on completions already sampled: ``{model: B x G texts}`` (no KL)."""
    return _finish(prompts, {k: [list(r) for r in v] for k, v in completions.items()}, bank, output_dir, kl=None,
                   estimators=estimators, eps0=eps0, alpha=alpha, seed=seed, level=level, n_boot=n_boot,
                   normalize=normalize, violation_options=violation_options, estimator_options=estimator_options,
                   html=html, report_to=report_to, wandb_project=wandb_project, run_name=run_name,
                   training_metrics=training_metrics)


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def load_model(path: str, *, device: str = "auto", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local directory (checkpoint) or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(path).expanduser()
    if path.startswith(("/", ".", "~")) and not local.exists():
        raise FileNotFoundError(f"model path does not exist: {path}")
    try:
        tok = AutoTokenizer.from_pretrained(str(local) if local.exists() else path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(local) if local.exists() else path,
                                                     trust_remote_code=trust_remote_code)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileNotFoundError(f"cannot load model {path!r} ({first}); offline, pass a local path") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(_device(device)), tok


def run_from_config(config: Mapping[str, Any], *, output_dir: str) -> dict[str, Any]:
    """``multidom evaluate``: build :class:`EvaluateConfig` (unknown keys refused), then evaluate."""
    from reward_models import RewardBank

    cfg = from_mapping(EvaluateConfig, config, "evaluate")
    bank = RewardBank(cfg.rewards)
    common = dict(
        estimators=cfg.estimators, eps0=cfg.eps0, alpha=cfg.alpha, seed=cfg.seed, level=cfg.level, n_boot=cfg.n_boot,
        normalize=cfg.normalize, violation_options={"cost": cfg.cost}, estimator_options=cfg.estimator_options,
        html=cfg.html, report_to=cfg.report_to, wandb_project=cfg.wandb_project, run_name=cfg.run_name,
        output_dir=output_dir, training_metrics=cfg.training_metrics,
    )
    if cfg.completions is not None:
        prompts, completions = read_completions(cfg.completions)
        if cfg.max_prompts:
            prompts, completions = prompts[: cfg.max_prompts], {k: v[: cfg.max_prompts] for k, v in completions.items()}
        if len(completions) < 2:
            raise ConfigError(f"completions file {cfg.completions} holds {len(completions)} model; need at least 2")
        result = evaluate_completions(prompts, completions, bank, **common)
    else:
        prompts = load_prompts(cfg.prompts)
        prompts = prompts[: cfg.max_prompts] if cfg.max_prompts else prompts
        models = {m.get("name") or Path(m["path"]).name: load_model(
            m["path"], device=cfg.device, trust_remote_code=cfg.trust_remote_code) for m in cfg.models}
        if len(models) < len(cfg.models):
            raise ConfigError("model names must be distinct")
        result = evaluate_models(models, prompts, bank, G=cfg.num_generations, max_new_tokens=cfg.max_new_tokens,
                                 temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size, **common)
    result["config"] = asdict(cfg)
    _check_finite(result)
    return result


def _check_finite(result: Mapping[str, Any]) -> None:
    """Warn-free sanity: the eps point estimates must be finite numbers."""
    for est, d in result["dominance"].items():
        if any(not math.isfinite(x) for row in d["eps"] for x in row):
            raise ValueError(f"estimator {est!r} returned non-finite eps values; check the rewards for constants")
