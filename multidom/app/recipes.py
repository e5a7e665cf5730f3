"""One config-to-run path for every trainer: the table :data:`RECIPES` and :func:`run_training`.

A training config (YAML, after ``a.b=c`` overrides) has the same sections for every trainer::

    trainer: online | aot | offline       # (quickstart: the multi-stage pipeline of multidom.app.quickstart)
    model: {...}          # multidom.lm.loading.ModelSpec (name_or_path, tokenizer, ref_model, dtype,
                          #   trust_remote_code, peft)
    data: {...}           # the trainer's data keys (see each recipe)
    rewards: [...]        # the reward bank (online; offline when it scores the candidates)
    dominance: {...}      # multidom.core.spec.DominanceSpec (estimator, cost, cost_gain, margin,
                          #   options, normalisation)
    training: {...}       # the trainer's typed config (TRL-style; beta keeps TRL's meaning)

Everything is validated -- section names, the spec, the training fields and their types, the model
spec, reward types -- before a model or a dataset is loaded. A value travels one way down:
YAML -> :meth:`DominanceSpec.from_mapping` -> the trainer's config -> the objective ->
``multidom.violation`` -> the solver.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from multidom.app.config import check_types
from multidom.app.data import load_data, load_prompts
from multidom.core.spec import DominanceSpec
from multidom.keys import ConfigError, check_keys
from multidom.lm.loading import ModelSpec

__all__ = ["Recipe", "RECIPES", "run_training", "build_args", "plan", "resume_checkpoint", "RUN_FILE"]

RUN_FILE = "multidom_run.json"
"""The resolved config of a run, written into its output directory before training (read by evaluate)."""

#: TRL fields that would be ignored: multidom loads the model itself (multidom.lm.loading).
_MODEL_KEYS_IN_TRAINING = {"trust_remote_code": "model.trust_remote_code", "model_init_kwargs": "model.dtype"}
#: Range checks TRL / transformers do not make (their errors come late or never).
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": (lambda v: v > 0, "> 0"),
    "per_device_train_batch_size": (lambda v: v >= 1, ">= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "num_generations": (lambda v: v >= 2, ">= 2 (a group needs two completions)"),
    "max_completion_length": (lambda v: v >= 1, ">= 1"),
    "num_train_epochs": (lambda v: v > 0, "> 0"),
    "beta": (lambda v: v >= 0, ">= 0"),
    "warmup_ratio": (lambda v: 0 <= v < 1, "in [0, 1)"),
}
_STRATEGIES = ("save_strategy", "eval_strategy", "logging_strategy", "hub_strategy")


@dataclass(frozen=True)
class Recipe:
    """One row of the trainer table.

    Attributes:
        config: ``module:Class`` of the typed training config (imported lazily).
        trainer: ``module:Class`` of the trainer.
        data_keys: the keys its ``data`` section takes.
        rewards: whether a ``rewards`` section is required (``True``), optional (``None``) or refused (``False``).
        load: ``(data section, bank or None) -> {"train", "eval"?, "attributes"?}`` raw datasets.
        summary: one line for ``multidom train --help`` and errors.
    """

    config: str
    trainer: str
    data_keys: tuple[str, ...]
    rewards: bool | None
    load: Callable[[dict, Any], dict]
    summary: str


def _import(path: str) -> Any:
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


# ---- data of each trainer ----------------------------------------------------------------------------
def _online_data(data: dict, bank: Any) -> dict:
    train, evals = load_prompts(data)
    return {"train": train, "eval": evals}


def _aot_data(data: dict, bank: Any) -> dict:
    import datasets

    out: dict[str, Any] = {}
    if "train" in data:
        if "desirable" in data or "undesirable" in data:
            raise ConfigError("data: give either 'train' or 'desirable' + 'undesirable', not both")
        out["train"] = load_data(data["train"], "train")
    elif "desirable" in data and "undesirable" in data:
        good, bad = load_data(data["desirable"], "desirable"), load_data(data["undesirable"], "undesirable")
        out["train"] = datasets.concatenate_datasets([
            good.add_column("label", [True] * len(good)), bad.add_column("label", [False] * len(bad))])
    else:
        raise ConfigError("data section needs 'train', or both 'desirable' and 'undesirable'")
    if data.get("eval") is not None:
        out["eval"] = load_data(data["eval"], "eval")
    return out


def _offline_data(data: dict, bank: Any) -> dict:
    from multidom.trainers.offline import check_reward_columns, score_with_bank

    if "train" not in data:
        raise ConfigError("data section needs 'train'")
    sets = {"train": load_data(data["train"], "train")}
    if data.get("eval") is not None:
        sets["eval"] = load_data(data["eval"], "eval")
    col = data.get("completions_column", "completions")
    if bank is not None:
        if data.get("reward_columns") or data.get("rewards_column"):
            raise ConfigError("offline: give either rewards (a bank that scores the candidates) or "
                              "data.reward_columns / data.rewards_column, not both")
        names: list = []
        for key in list(sets):
            sets[key], names = score_with_bank(sets[key], bank, completions_column=col)
        prep = dict(completions_column=col, rewards_column="rewards", reward_columns=[])
    else:
        names = list(data.get("reward_columns") or [])
        prep = dict(completions_column=col, rewards_column=data.get("rewards_column", "rewards"), reward_columns=names)
    for key, ds in sets.items():
        check_reward_columns(ds, f"data.{key}", **prep)
    return {**sets, "attributes": names, "prep": prep}


#: ``trainer:`` value -> its recipe; a new trainer is a new row.
RECIPES: dict[str, Recipe] = {
    "online": Recipe(
        "multidom.trainers.online_config:OnlineDominanceConfig", "multidom.trainers.online:OnlineDominanceTrainer",
        ("path", "name", "split", "prompt_column", "prompts", "eval_prompts", "eval_split", "max_samples", "chat"),
        True, _online_data, "online multi-reward dominance (TRL GRPO + dominance potentials)"),
    "aot": Recipe(
        "multidom.trainers.aot:AOTConfig", "multidom.trainers.aot:AOTTrainer",
        ("train", "eval", "desirable", "undesirable"), False, _aot_data,
        "AOT, paired or unpaired, on the global batch"),
    "offline": Recipe(
        "multidom.trainers.offline:OfflineDominanceConfig", "multidom.trainers.offline:OfflineDominanceTrainer",
        ("train", "eval", "completions_column", "reward_columns", "rewards_column"), None, _offline_data,
        "offline multi-reward dominance over K candidates per prompt"),
}

SECTIONS = ("model", "data", "rewards", "dominance", "training", "seed")


def build_args(config_cls: type, training: Mapping[str, Any] | None, output_dir: str, spec: DominanceSpec) -> Any:
    """The typed training config from the ``training`` section and the spec; unknown keys get a suggestion,
    wrong types a one-line error."""
    if training is not None and not isinstance(training, Mapping):
        raise ConfigError("training section must be a mapping")
    training = dict(training or {})
    names = {f.name for f in dataclasses.fields(config_cls) if f.init} - {"dominance"}
    check_keys(training, names, "training")
    if "output_dir" in training:
        raise ConfigError("training.output_dir is set by the CLI (--output-dir); remove it from the config")
    for key, where in _MODEL_KEYS_IN_TRAINING.items():
        if key in training:
            raise ConfigError(f"training.{key} is not read here (the model is loaded from the model section): "
                              f"set {where}")
    for key in _STRATEGIES:  # YAML 1.1 reads a bare `no` as False
        if training.get(key) is False:
            training[key] = "no"
    check_types(config_cls, training, "training")
    for key, (ok, rule) in _RANGES.items():
        if key in training and training[key] is not None and not ok(training[key]):
            raise ConfigError(f"training.{key} must be {rule}, got {training[key]!r}")
    training.setdefault("report_to", "wandb")  # offline unless a key is configured (trainers.tracking)
    training.setdefault("save_strategy", "steps")
    try:
        return config_cls(output_dir=output_dir, dominance=spec, **training)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"training section: {str(exc).splitlines()[0]}") from None


@dataclass
class Plan:
    """A validated run: everything checked, nothing loaded yet."""

    recipe: Recipe
    model: ModelSpec
    args: Any
    data: dict
    rewards: list | None


def plan(name: str, config: Mapping[str, Any], output_dir: str) -> Plan:
    """Validate a training config without loading any model or dataset."""
    recipe = RECIPES[name]
    check_keys(config, SECTIONS, "top-level")
    for section in ("model", "data"):
        if section not in config:
            raise ConfigError(f"a {name} config needs a '{section}' section")
    if not isinstance(config["data"], Mapping):
        raise ConfigError("data section must be a mapping")
    check_keys(config["data"], recipe.data_keys, "data")
    rewards = config.get("rewards")
    if recipe.rewards is True and not rewards:
        raise ConfigError(f"a {name} config needs a 'rewards' section (the reward bank), e.g. rewards: [sentiment]")
    if recipe.rewards is False and rewards:
        raise ConfigError(f"the {name} trainer takes no rewards section (it learns from preferences)")
    if rewards is not None and not isinstance(rewards, list):
        raise ConfigError("rewards must be a list of reward-model specs")
    cfg_cls = _import(recipe.config)
    default = next(f for f in dataclasses.fields(cfg_cls) if f.name == "dominance")
    base = default.default if default.default is not dataclasses.MISSING else default.default_factory()
    try:
        spec = DominanceSpec.from_mapping(config.get("dominance"), "dominance", **base.to_dict())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    training = dict(config.get("training") or {})
    if "seed" in config:
        training.setdefault("seed", config["seed"])
    args = build_args(cfg_cls, training, output_dir, spec)
    try:
        model = ModelSpec.from_config(config["model"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Plan(recipe, model, args, dict(config["data"]), list(rewards) if rewards else None)


def run_training(name: str, config: Mapping[str, Any], *, output_dir: str, resume: bool = False) -> dict:
    """Validate, load, build, train (resuming when asked), save ``final/``; a JSON-able summary."""
    if name not in RECIPES:
        raise ConfigError(f"unknown trainer {name!r}; choose one of {', '.join(RECIPES)}")
    p = plan(name, config, output_dir)
    from multidom.trainers.tracking import wandb_scope

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / RUN_FILE).write_text(json.dumps(
        {"trainer": name, "config": _jsonable(config), "training": _jsonable(p.args.to_dict())}, indent=2) + "\n")
    with wandb_scope(output_dir):
        return _train(p, output_dir=output_dir, resume=resume)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def resume_checkpoint(run_dir: str | Path) -> str:
    """The newest complete checkpoint of ``run_dir`` (half-written ones set aside, and said so)."""
    from multidom.app.rundir import resume_point

    best, moved = resume_point(run_dir)
    for path in moved:
        print(f"multidom: set aside an incomplete checkpoint: {path}", flush=True)
    if best is None:
        raise FileNotFoundError(f"resume requested but {run_dir} holds no complete checkpoint-* folder"
                                + (f" ({len(moved)} incomplete set aside)" if moved else ""))
    print(f"multidom: resuming from {best}", flush=True)
    return str(best)


def _train(p: Plan, *, output_dir: str, resume: bool) -> dict:
    from multidom.lm.loading import load_model_and_tokenizer
    from multidom.trainers.tracking import read_metrics

    bank = None
    if p.rewards:
        from reward_models import RewardBank

        bank = RewardBank(p.rewards, device=str(p.args.device))  # each rank's reward models on its own device
    data = p.recipe.load(p.data, bank)
    model, tokenizer, ref, peft_config = load_model_and_tokenizer(p.model)
    trainer_cls = _import(p.recipe.trainer)
    kwargs: dict[str, Any] = dict(processing_class=tokenizer, eval_dataset=data.get("eval"), peft_config=peft_config)
    if p.recipe.rewards is True:
        trainer = trainer_cls(model, p.args, data["train"], bank, **kwargs)
    else:
        if data.get("attributes") and not getattr(p.args, "attribute_names", True):
            p.args.attribute_names = list(data["attributes"])
        if "prep" in data:
            from multidom.trainers.offline import prepare_offline_dataset

            for key in ("train", "eval"):
                if data.get(key) is not None:
                    data[key] = prepare_offline_dataset(data[key], tokenizer, max_length=p.args.max_length,
                                                        **data["prep"])
            kwargs["eval_dataset"] = data.get("eval")
        trainer = trainer_cls(model, p.args, train_dataset=data["train"], ref_model=ref, **kwargs)
    checkpoint = resume_checkpoint(output_dir) if resume else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    final = Path(output_dir) / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    summary: dict[str, Any] = {"global_step": int(trainer.state.global_step),
                               "train_loss": float(result.training_loss), "resumed_from": checkpoint}
    if data.get("eval") is not None and p.recipe.rewards is not True:
        summary["eval"] = trainer.evaluate()
    metrics_path = Path(output_dir) / "metrics.jsonl"
    rows = list(read_metrics(metrics_path)) if metrics_path.is_file() else []
    logged = [r for r in rows if any(k.startswith("dominance/") for k in r) and not any(k.startswith("eval") for k in r)]
    final_metrics = {k: v for k, v in (logged[-1] if logged else {}).items()
                     if isinstance(v, (int, float)) and (not isinstance(v, float) or math.isfinite(v))}
    summary.update(model_path=str(final), metrics_path=str(metrics_path), output_dir=output_dir,
                   final_metrics=final_metrics)
    if bank is not None:
        summary["reward_attributes"] = list(bank.names)
    return summary
