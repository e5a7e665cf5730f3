"""Shared CLI runner for the offline trainers (``trainer: aot`` / ``trainer: offline``).

A config mapping has three sections:

* ``model``: ``name_or_path`` (hub id or local folder), ``ref_model`` (optional separate
  reference), ``peft`` (optional LoRA settings: a ``peft.LoraConfig`` mapping, reference = the
  policy with the adapter disabled), ``trust_remote_code`` (default False, DESIGN.md §7),
  ``dtype`` (``float32`` | ``bfloat16`` | ``float16``).
* ``data``: datasets, each a local file (json/jsonl/csv/parquet), a ``save_to_disk`` folder, a
  hub id, or a mapping ``{path, name, split, data_files}`` passed to ``datasets.load_dataset``.
* ``training``: the trainer's typed config (a ``transformers.TrainingArguments`` subclass).

Unknown keys are refused with a suggestion (:mod:`multidom.app.config`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from multidom.app.config import ConfigError, check_keys, unknown_key_message

__all__ = ["MODEL_KEYS", "load_data", "build_args", "run_trainer"]

MODEL_KEYS = ("name_or_path", "ref_model", "peft", "trust_remote_code", "dtype")
DATA_KEYS = {
    "aot": ("train", "eval", "desirable", "undesirable"),
    "offline": ("train", "eval", "completions_column", "reward_columns", "rewards_column", "reward_models"),
}
_STRATEGIES = ("save_strategy", "eval_strategy", "logging_strategy", "hub_strategy")
_FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_data(spec: Any, what: str):
    """A ``datasets.Dataset`` from a file, a ``save_to_disk`` folder, a hub id or a ``load_dataset`` mapping."""
    import datasets

    if isinstance(spec, dict):
        check_keys(spec, ("path", "name", "split", "data_files"), f"data.{what}")
        if "path" not in spec:
            raise ConfigError(f"data.{what} needs a 'path' (file, folder or hub id)")
        spec = dict(spec)
        path, split = spec.pop("path"), spec.pop("split", "train")
    elif isinstance(spec, str):
        path, split, spec = spec, "train", {}
    else:
        raise ConfigError(f"data.{what} must be a path, a hub id or a mapping, got {type(spec).__name__}")
    p = Path(path).expanduser()
    if p.suffix in _FILE_FORMATS:
        if not p.is_file():
            raise FileNotFoundError(f"data.{what}: file not found: {p}")
        return datasets.load_dataset(_FILE_FORMATS[p.suffix], data_files=str(p), split=split)
    if p.is_dir() and (p / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(p))
    if p.is_dir() or path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"data.{what}: {p} is neither a data file nor a save_to_disk folder")
    try:
        return datasets.load_dataset(path, split=split, **spec)
    except (ConnectionError, OSError) as exc:
        raise FileNotFoundError(
            f"data.{what}: cannot load {path!r} from the hub ({type(exc).__name__}); pass a local path instead"
        ) from None


def build_args(config_cls: type, training: dict | None, output_dir: str):
    """The typed training config from the ``training`` section; unknown keys get a suggestion."""
    training = dict(training or {})
    if not isinstance(training, dict):
        raise ConfigError("training section must be a mapping")
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    for key in training:
        if key not in names:
            raise ConfigError(unknown_key_message(str(key), names, "training"))
    if "output_dir" in training:
        raise ConfigError("training.output_dir is set by the CLI (--output-dir); remove it from the config")
    for key in _STRATEGIES:  # YAML 1.1 reads a bare `no` as False
        if training.get(key) is False:
            training[key] = "no"
    training.setdefault("report_to", "wandb")  # offline unless a key is configured (configure_wandb)
    training.setdefault("save_strategy", "steps")
    try:
        return config_cls(output_dir=output_dir, **training)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training section: {exc}") from None


def _load_model(model_cfg: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_keys(model_cfg, MODEL_KEYS, "model")
    if "name_or_path" not in model_cfg:
        raise ConfigError("model section needs 'name_or_path' (a hub id or a local folder)")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    dtype = model_cfg.get("dtype", "float32")
    if dtype not in dtypes:
        raise ConfigError(f"model.dtype {dtype!r} is not one of {', '.join(dtypes)}")
    trust = bool(model_cfg.get("trust_remote_code", False))

    def load(path: str):
        try:
            return AutoModelForCausalLM.from_pretrained(path, dtype=dtypes[dtype], trust_remote_code=trust)
        except OSError as exc:
            raise FileNotFoundError(f"cannot load model {path!r}: {str(exc).splitlines()[0]}") from None

    name = model_cfg["name_or_path"]
    model = load(name)
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ref = load(model_cfg["ref_model"]) if model_cfg.get("ref_model") else None
    peft_cfg = None
    if model_cfg.get("peft"):
        from peft import LoraConfig

        try:
            peft_cfg = LoraConfig(task_type="CAUSAL_LM", **model_cfg["peft"])
        except TypeError as exc:
            raise ConfigError(f"model.peft: {exc}") from None
    return model, tokenizer, ref, peft_cfg


def run_trainer(config: dict, *, output_dir: str, resume: bool, config_cls: type, build: Callable,
                data_mode: str, prepare_data: Callable | None = None) -> dict:
    """Build, train (resuming when asked), save, evaluate; return a JSON-able summary.

    The wandb run the training opens is finished on return (or on an error / Ctrl-C), so the next
    training in the same process logs its own run under its own output directory."""
    from multidom.trainers.tracking import wandb_scope

    with wandb_scope(output_dir):
        return _run_trainer(config, output_dir=output_dir, resume=resume, config_cls=config_cls, build=build,
                            data_mode=data_mode, prepare_data=prepare_data)


def _run_trainer(config: dict, *, output_dir: str, resume: bool, config_cls: type, build: Callable,
                 data_mode: str, prepare_data: Callable | None) -> dict:
    from transformers.trainer_utils import get_last_checkpoint

    from multidom.trainers.tracking import JsonlMetrics, read_metrics

    check_keys(config, ("model", "data", "training"), None)
    for section in ("model", "data"):
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"config needs a '{section}' section (a mapping)")
    data_cfg = dict(config["data"])
    check_keys(data_cfg, DATA_KEYS[data_mode], "data")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    args = build_args(config_cls, config.get("training"), output_dir)
    model, tokenizer, ref, peft_cfg = _load_model(dict(config["model"]))
    data = (prepare_data or _aot_data)(data_cfg)
    metrics_path = os.path.join(output_dir, "metrics.jsonl")
    trainer = build(model, tokenizer, args, data, ref, peft_cfg, [JsonlMetrics(metrics_path)])
    checkpoint = None
    if resume:
        checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if checkpoint is None:
            raise FileNotFoundError(f"resume requested but {output_dir} holds no checkpoint-* folder")
    result = trainer.train(resume_from_checkpoint=checkpoint)
    final_dir = os.path.join(output_dir, "final")
    trainer.save_model(final_dir)
    tokenizer.save_pretrained(final_dir)
    summary: dict[str, Any] = {"train": {k: float(v) for k, v in result.metrics.items()},
                               "global_step": int(trainer.state.global_step)}
    if trainer.eval_dataset is not None:
        summary["eval"] = trainer.evaluate()
    rows = list(read_metrics(metrics_path)) if os.path.exists(metrics_path) else []
    logged = [r for r in rows if any(k.startswith("dominance/") for k in r)]
    summary.update(model_path=final_dir, metrics_path=metrics_path, output_dir=output_dir,
                   final_metrics=logged[-1] if logged else {})
    return summary


def _aot_data(data_cfg: dict) -> dict:
    import datasets

    out = {}
    if "train" in data_cfg:
        if "desirable" in data_cfg or "undesirable" in data_cfg:
            raise ConfigError("data: give either 'train' or 'desirable' + 'undesirable', not both")
        out["train"] = load_data(data_cfg["train"], "train")
    elif "desirable" in data_cfg and "undesirable" in data_cfg:
        good, bad = load_data(data_cfg["desirable"], "desirable"), load_data(data_cfg["undesirable"], "undesirable")
        out["train"] = datasets.concatenate_datasets([
            good.add_column("label", [True] * len(good)), bad.add_column("label", [False] * len(bad))])
    else:
        raise ConfigError("data section needs 'train', or both 'desirable' and 'undesirable'")
    if data_cfg.get("eval") is not None:
        out["eval"] = load_data(data_cfg["eval"], "eval")
    return out
