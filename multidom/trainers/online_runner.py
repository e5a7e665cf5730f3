"""``trainer: online`` from a YAML mapping (the CLI runner contract).

Sections (all but ``model`` and ``data`` optional)::

    model: ./runs/sft                  # or {name_or_path: ..., trust_remote_code: false, dtype: float32}
    data:                              # one of path / prompts
      path: ./prompts.jsonl            # a .json/.jsonl/.csv/.parquet file, a saved dataset dir, or a hub id
      split: train
      prompt_column: prompt            # renamed to 'prompt' (TRL's column)
      prompts: [..]                    # inline prompts instead of path
      eval_prompts: [..]               # optional held-out prompts
      max_samples: null
      chat: false                      # wrap plain-string prompts as one user message
    rewards: [{type: sentiment}, ...]  # the reward bank (reward_models.create specs)
    peft: {r: 8, lora_alpha: 16}       # optional LoRA (peft.LoraConfig fields)
    training: {...}                    # OnlineDominanceConfig fields (GRPOConfig + dominance fields)
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from multidom.config import ConfigError, check_keys, from_mapping
from multidom.tracking import read_metrics, wandb_scope
from multidom.trainers.online_config import OnlineDominanceConfig

__all__ = ["run", "build_config", "load_prompts", "SECTIONS"]

SECTIONS = ("model", "data", "rewards", "peft", "training")
DATA_KEYS = ("path", "split", "prompt_column", "prompts", "eval_prompts", "eval_split", "max_samples", "chat",
             "name")
MODEL_KEYS = ("name_or_path", "trust_remote_code", "dtype", "tokenizer")


def build_config(config: dict, output_dir: str) -> OnlineDominanceConfig:
    """The typed training config from the ``training`` and ``rewards`` sections."""
    check_keys(config, SECTIONS, "top-level")
    training = dict(config.get("training") or {})
    if "rewards" in config and "rewards" in training:
        raise ConfigError("rewards given both at top level and in the training section; keep one")
    if "rewards" in config:
        training["rewards"] = config["rewards"]
    training["output_dir"] = output_dir
    return from_mapping(OnlineDominanceConfig, training, "training")


def _as_rows(prompts: Any, chat: bool) -> list:
    if not isinstance(prompts, list) or not prompts:
        raise ConfigError("data.prompts must be a non-empty list of prompts")
    return [[{"role": "user", "content": p}] if chat and isinstance(p, str) else p for p in prompts]


def load_prompts(data: dict) -> tuple[Any, Any]:
    """``(train, eval or None)`` ``datasets.Dataset``s with a ``prompt`` column."""
    from datasets import Dataset, load_dataset, load_from_disk

    check_keys(data, DATA_KEYS, "data")
    chat = bool(data.get("chat", False))
    if ("path" in data) == ("prompts" in data):
        raise ConfigError("data section needs exactly one of 'path' or 'prompts'")
    if "prompts" in data:
        train = Dataset.from_dict({"prompt": _as_rows(data["prompts"], chat)})
    else:
        path, split = str(data["path"]), data.get("split", "train")
        p = Path(path).expanduser()
        suffix = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(p.suffix)
        if p.is_dir():
            train = load_from_disk(str(p))
            train = train[split] if hasattr(train, "keys") else train
        elif p.is_file() and suffix:
            train = load_dataset(suffix, data_files=str(p), split="train")
        elif p.exists():
            raise ConfigError(f"data.path {path}: unsupported file type (use .jsonl, .json, .csv, .parquet)")
        else:
            train = load_dataset(path, data.get("name"), split=split)
        col = data.get("prompt_column", "prompt")
        if col not in train.column_names:
            raise ConfigError(f"data: no column {col!r} in the dataset (columns: {', '.join(train.column_names)})")
        if col != "prompt":
            train = train.rename_column(col, "prompt")
        if chat:
            train = train.map(lambda r: {"prompt": _as_rows([r["prompt"]], True)[0]})
    if data.get("max_samples"):
        train = train.select(range(min(int(data["max_samples"]), len(train))))
    evals = None
    if data.get("eval_prompts"):
        evals = Dataset.from_dict({"prompt": _as_rows(data["eval_prompts"], chat)})
    return train, evals


def _model_spec(model: Any) -> dict:
    if isinstance(model, str):
        return {"name_or_path": model}
    if not isinstance(model, dict) or "name_or_path" not in model:
        raise ConfigError("model must be a path / hub id or a mapping with 'name_or_path'")
    check_keys(model, MODEL_KEYS, "model")
    return model


def run(config: dict, *, output_dir: str, resume: bool = False) -> dict:
    """Train from a config mapping (without ``trainer:``); see the module docstring for the sections.

    The wandb run the training opens is finished on return (or on an error / Ctrl-C), so the next
    training in the same process logs its own run under its own output directory."""
    with wandb_scope(output_dir):
        return _run(config, output_dir=output_dir, resume=resume)


def _run(config: dict, *, output_dir: str, resume: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint

    from multidom.trainers.online import MultiDomTrainer

    args = build_config(config, output_dir)
    if "model" not in config or "data" not in config:
        raise ConfigError("an online config needs 'model' and 'data' sections")
    spec = _model_spec(config["model"])
    dtype = spec.get("dtype")
    if dtype is not None and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ConfigError(f"model.dtype {dtype!r} is not a torch dtype (e.g. float32, bfloat16)")
    trust = bool(spec.get("trust_remote_code", False))
    model = AutoModelForCausalLM.from_pretrained(
        spec["name_or_path"], trust_remote_code=trust, **({"dtype": getattr(torch, dtype)} if dtype else {})
    )
    tokenizer = AutoTokenizer.from_pretrained(spec.get("tokenizer", spec["name_or_path"]), trust_remote_code=trust)
    train, evals = load_prompts(dict(config["data"]))
    peft_config = None
    if config.get("peft"):
        from peft import LoraConfig

        fields = {f.name for f in dataclasses.fields(LoraConfig)}
        check_keys(config["peft"], fields, "peft")
        peft_config = LoraConfig(task_type="CAUSAL_LM", **config["peft"])
    trainer = MultiDomTrainer(model, args, train, processing_class=tokenizer, eval_dataset=evals,
                              peft_config=peft_config)
    last = get_last_checkpoint(output_dir) if resume and Path(output_dir).is_dir() else None
    result = trainer.train(resume_from_checkpoint=last)
    final = Path(output_dir) / "final"
    trainer.save_model(str(final))
    metrics_path = Path(output_dir) / "metrics.jsonl"
    rows = list(read_metrics(metrics_path)) if metrics_path.is_file() else []
    train_rows = [r for r in rows if "dominance/masked_fraction" in r]
    final_metrics = {k: v for k, v in (train_rows[-1] if train_rows else {}).items()
                     if isinstance(v, (int, float)) and (not isinstance(v, float) or math.isfinite(v))}
    return {
        "global_step": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "final_metrics": final_metrics,
        "model_path": str(final),
        "metrics_path": str(metrics_path),
        "resumed_from": last,
        "reward_attributes": list(trainer.dominance.names),
    }
