"""``multidom evaluate``: an evaluation config (YAML and flags) -> models, prompts, bank -> report.

Everything is validated before anything is generated: the config keys and types, the dominance specs,
the reward types, the model paths, duplicate model names and the bootstrap size. Each model entry is a
:class:`~multidom.lm.loading.ModelSpec` mapping plus a ``name`` (``trust_remote_code`` applies to that
model only). When a model is a checkpoint of a multidom training run, the generation settings of that
run (``max_completion_length``, ``temperature``, ``top_p``, ``top_k``) are the defaults.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from multidom.app.config import from_mapping
from multidom.evaluation.analysis import eval_specs
from multidom.evaluation.completions import load_prompts, read_completions
from multidom.evaluation.pipeline import evaluate_completions, evaluate_models, run_checkpoints
from multidom.keys import ConfigError, check_keys
from multidom.lm.generation import Sampling
from multidom.lm.loading import ModelSpec, load_model, load_tokenizer

__all__ = ["EvaluateConfig", "run_evaluation", "run_generation_settings"]

_MODEL_KEYS = ("name", "path", "name_or_path", "tokenizer", "dtype", "trust_remote_code")


@dataclass
class EvaluateConfig:
    """Options of ``multidom evaluate`` (YAML keys; flags of the same name override them)."""

    models: list = field(default_factory=list)
    """models or checkpoints: [{name, path, trust_remote_code?, dtype?}] or {name: path}; the first is the reference."""
    checkpoints: str | None = None
    """a training output dir: its checkpoint-N folders (by step) and final/ are added after ``models``."""
    prompts: Any = None
    """held-out prompts: a .txt/.jsonl file, a list, or {path, split, column, limit} of a dataset."""
    completions: str | None = None
    """JSONL file of completions to score instead of generating (see multidom.evaluation.completions)."""
    rewards: list = field(default_factory=list)
    """reward bank: registry names or ``{type: ..., ...}`` specs (``multidom rewards list``)."""
    dominance: Any = field(default_factory=lambda: ["quantile", "sinkhorn"])
    """one DominanceSpec per estimator reported: a mapping, an estimator name, or a list of those."""
    num_generations: int = 8
    """G, completions sampled per prompt and model."""
    max_prompts: int | None = None
    """use only the first N prompts."""
    eps0: float = 0.4
    """threshold of the absolute test (H0: eps >= eps0)."""
    alpha: float = 0.05
    """level of the absolute and relative tests."""
    level: float = 0.9
    """coverage of the bootstrap intervals."""
    n_boot: int = 200
    """bootstrap replicates over prompts (>= 20)."""
    seed: int = 0
    """seed of sampling and bootstrap."""
    max_new_tokens: int | None = None
    """generation length limit (default: the evaluated run's max_completion_length, else 48)."""
    temperature: float | None = None
    """sampling temperature (default: the evaluated run's, else 1.0, which keeps the KL estimate unbiased)."""
    top_p: float | None = None
    """nucleus sampling (default: the evaluated run's, else 1.0)."""
    batch_size: int = 16
    """prompts per generation batch."""
    device: str = "auto"
    """cpu | cuda | auto."""
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
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.specs = eval_specs(self.dominance)
        for key in ("eps0", "alpha", "level"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must lie in (0, 1), got {getattr(self, key)}")
        if self.num_generations < 1:
            raise ConfigError(f"num_generations must be >= 1, got {self.num_generations}")
        if self.n_boot < 20:
            raise ConfigError(f"n_boot must be >= 20 bootstrap replicates, got {self.n_boot}")
        if not self.rewards:
            raise ConfigError("no reward models: set rewards (e.g. rewards: [sentiment, brevity]) or pass --reward")
        if self.completions is None and len(self.models) < 2:
            raise ConfigError("evaluate needs at least 2 models (--model NAME=PATH, the first is the reference) "
                              "or a completions file")
        if self.completions is None and self.prompts is None:
            raise ConfigError("no prompts: set prompts (a file or a list) or pass --prompts")
        self.model_specs = {}
        for i, m in enumerate(self.models):
            if not isinstance(m, Mapping) or not ({"path", "name_or_path"} & set(m)):
                raise ConfigError(f"models[{i}] is {{name: ..., path: ...}}, got {m!r}")
            check_keys(m, _MODEL_KEYS, f"models[{i}]")
            entry = dict(m)
            path = entry.pop("path", None) or entry.pop("name_or_path")
            name = entry.pop("name", None) or Path(path).name
            if name in self.model_specs:
                raise ConfigError(f"model names must be distinct: {name!r} appears twice")
            try:
                self.model_specs[name] = ModelSpec(name_or_path=str(path), **entry)
            except ValueError as exc:
                raise ConfigError(str(exc).replace("model.", f"models[{i}].", 1)) from None


def run_generation_settings(path: str | Path) -> dict[str, Any]:
    """The generation settings of the multidom training run a checkpoint belongs to (``{}`` if none):
    ``max_completion_length``, ``temperature``, ``top_p``, ``top_k`` from the run's ``trainer_state`` /
    ``summary.json`` neighbours, read as JSON (never unpickled)."""
    p = Path(path).expanduser()
    for folder in (p, p.parent, p.parent.parent):
        cfg = folder / "multidom_run.json"
        if cfg.is_file():
            training = json.loads(cfg.read_text()).get("training", {})
            return {k: training[k] for k in ("max_completion_length", "temperature", "top_p", "top_k")
                    if k in training}
    return {}


def _sampling(cfg: EvaluateConfig) -> Sampling:
    run: dict[str, Any] = {}
    for spec in list(cfg.model_specs.values())[1:]:
        run = run or run_generation_settings(spec.name_or_path)
    return Sampling(
        max_new_tokens=int(cfg.max_new_tokens or run.get("max_completion_length") or 48),
        temperature=float(cfg.temperature if cfg.temperature is not None else run.get("temperature", 1.0)),
        top_p=float(cfg.top_p if cfg.top_p is not None else run.get("top_p", 1.0)),
        top_k=int(run.get("top_k") or 0),
    )


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def run_evaluation(config: Mapping[str, Any], *, output_dir: str) -> dict[str, Any]:
    """``multidom evaluate``: build :class:`EvaluateConfig` (unknown keys refused), then evaluate."""
    from reward_models import RewardBank

    cfg = from_mapping(EvaluateConfig, config, "evaluate")
    bank = RewardBank(cfg.rewards)
    common = dict(
        specs=cfg.specs, eps0=cfg.eps0, alpha=cfg.alpha, seed=cfg.seed, level=cfg.level, n_boot=cfg.n_boot,
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
        sampling = _sampling(cfg)
        models = {name: (load_model(spec).to(_device(cfg.device)), load_tokenizer(spec))
                  for name, spec in cfg.model_specs.items()}
        result = evaluate_models(models, prompts, bank, G=cfg.num_generations, sampling=sampling,
                                 batch_size=cfg.batch_size, **common)
        result["sampling"] = sampling.key()
    result["config"] = {k: v for k, v in asdict(cfg).items() if k != "dominance"}
    result["config"]["dominance"] = [s.to_dict() for s in cfg.specs]
    _check_finite(result)
    return result


def _check_finite(result: Mapping[str, Any]) -> None:
    """The eps point estimates must be finite numbers."""
    for est, d in result["dominance"].items():
        if any(not math.isfinite(x) for row in d["eps"] for x in row):
            raise ValueError(f"estimator {est!r} returned non-finite eps values; check the rewards for constants")
