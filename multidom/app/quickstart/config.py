"""Typed config of the quickstart (``configs/quickstart.yaml``), checked key by key.

Sections::

    seed: 0
    cache_dir: null          # SFT cache (default $MULTIDOM_CACHE or ~/.cache/multidom/quickstart)
    data: {...}              # DataConfig: chatterbot pairs, held-out split, alignment prompts
    tiny_lm: {...}           # multidom.app.quickstart.lm.TinyLMConfig: tokenizer and tiny Llama shape
    sft: {...}               # multidom.app.quickstart.sft.SFTConfig
    rewards: [...]           # reward bank: reward_models.create specs
    dominance: {...}         # the alignment's DominanceSpec (multidom.core.spec)
    training: {...}          # multidom.trainers.online_config.OnlineDominanceConfig fields (TRL GRPO + dominance)
    evaluation: {...}        # EvalConfig: held-out comparison of the aligned model with the SFT reference

Unknown keys raise ``ValueError`` naming the section and the closest valid key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from multidom.app.config import check_keys, from_mapping
from multidom.app.quickstart.lm import TinyLMConfig
from multidom.app.quickstart.sft import SFTConfig

__all__ = ["DEFAULT_REWARDS", "DataConfig", "EvalConfig", "QuickstartConfig", "default_cache_dir"]

DEFAULT_REWARDS: list[Any] = ["sentiment", "non_offensive", "relevance", {"type": "brevity", "unit": "words"}]


def default_cache_dir() -> Path:
    """``$MULTIDOM_CACHE/quickstart`` when set, else ``~/.cache/multidom/quickstart``."""
    root = os.environ.get("MULTIDOM_CACHE")
    return Path(root) / "quickstart" if root else Path.home() / ".cache" / "multidom" / "quickstart"


@dataclass
class DataConfig:
    """Which chatterbot pairs are used and how they are split."""

    language: str = "english"
    """Chatterbot corpus language directory."""
    max_prompt_words: int = 20
    """Drop pairs whose prompt is longer (in words)."""
    max_response_words: int = 24
    """Drop pairs whose response is longer (in words)."""
    eval_fraction: float = 0.12
    """Share of distinct prompts held out (never trained on, SFT or alignment)."""
    max_eval_prompts: int | None = None
    """Cap on the held-out prompts used for evaluation (None: all)."""
    align_prompts: int | None = 256
    """Distinct training prompts used for alignment (None: all); each gets a cached baseline cloud."""

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        for name in ("max_prompt_words", "max_response_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_eval_prompts", "align_prompts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"data.{name} must be >= 1 or null, got {value}")


@dataclass
class EvalConfig:
    """Held-out evaluation of the aligned model against the SFT reference (multidom.evaluation)."""

    num_generations: int = 8
    """Completions sampled per held-out prompt and model."""
    dominance: Any = field(default_factory=lambda: ["quantile", "sliced", "sinkhorn"])
    """One DominanceSpec per estimator reported (a mapping or an estimator name; the first is the headline)."""
    eps0: float = 0.4
    """Threshold of the absolute test (H0: eps >= eps0)."""
    alpha: float = 0.05
    """Level of the tests."""
    level: float = 0.9
    """Coverage of the bootstrap intervals."""
    n_boot: int = 100
    """Bootstrap replicates (prompts resampled jointly across models)."""
    max_new_tokens: int | None = None
    """Generation length (None: the training max_completion_length)."""
    temperature: float = 1.0
    """Sampling temperature at evaluation (1.0 keeps the KL estimate unbiased)."""
    batch_size: int = 32
    """Prompts per generation batch."""
    html: bool = False
    """Also write report.html."""

    def __post_init__(self) -> None:
        from multidom.evaluation.analysis import eval_specs

        self.specs = eval_specs(self.dominance)
        if self.num_generations < 1:
            raise ValueError(f"evaluation.num_generations must be >= 1, got {self.num_generations}")


_SECTIONS = ("seed", "cache_dir", "data", "tiny_lm", "sft", "rewards", "dominance", "training", "evaluation")


@dataclass
class QuickstartConfig:
    """The whole quickstart: data, tokenizer/model, SFT, reward bank, alignment and evaluation."""

    seed: int = 0
    """Seed of the tokenizer/model init, SFT shuffling, alignment and evaluation sampling."""
    cache_dir: str | None = None
    """Where the SFT model is cached (keyed by the hash of data/model/sft/seed); None: default_cache_dir()."""
    data: DataConfig = field(default_factory=DataConfig)
    tiny_lm: TinyLMConfig = field(default_factory=TinyLMConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rewards: list[Any] = field(default_factory=lambda: list(DEFAULT_REWARDS))
    """Reward bank specs (reward_models.create): names or {type: ..., ...} mappings."""
    dominance: dict[str, Any] = field(default_factory=dict)
    """The alignment's DominanceSpec over the quickstart's defaults (multidom.app.quickstart.pipeline)."""
    training: dict[str, Any] = field(default_factory=dict)
    """OnlineDominanceConfig fields; output_dir and seed are filled in by the quickstart."""
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | None) -> QuickstartConfig:
        """Build from a YAML mapping (without ``trainer:``); unknown keys are a ``ValueError``."""
        config = dict(config or {})
        check_keys(config, _SECTIONS, "quickstart")
        training = config.get("training") or {}
        if not isinstance(training, Mapping):
            raise ValueError(f"training section must be a mapping, got {type(training).__name__}")
        if "output_dir" in training:
            raise ValueError("training.output_dir is set by the quickstart; remove it (use --output-dir)")
        dominance = config.get("dominance") or {}
        if not isinstance(dominance, Mapping):
            raise ValueError(f"dominance section must be a mapping, got {type(dominance).__name__}")
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        rewards = config.get("rewards", list(DEFAULT_REWARDS))
        if not isinstance(rewards, list) or not rewards:
            raise ValueError("rewards must be a non-empty list of reward specs")
        return cls(
            seed=seed,
            cache_dir=config.get("cache_dir"),
            data=from_mapping(DataConfig, config.get("data"), "data"),
            tiny_lm=from_mapping(TinyLMConfig, config.get("tiny_lm"), "tiny_lm"),
            sft=from_mapping(SFTConfig, config.get("sft"), "sft"),
            rewards=rewards,
            dominance=dict(dominance),
            training=dict(training),
            evaluation=from_mapping(EvalConfig, config.get("evaluation"), "evaluation"),
        )

    def resolved_cache_dir(self) -> Path:
        """The SFT cache directory in force."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
