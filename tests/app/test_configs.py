"""The real-use configs (hub ids, GPUs) parse into their trainers' typed configs, and build and take one
training step through the CLI with tiny local stand-ins (a tiny random LM and reward classifier saved to
tmp, tiny datasets in the datasets' own formats).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from lm_tiny import PROMPTS, save_tiny_lm

from multidom.app import cli
from multidom.app.config import ConfigError, apply_overrides, from_mapping, load_config

REPO = Path(__file__).resolve().parents[2]
REAL = ("hh_rlhf_online.yaml", "helpsteer2_offline.yaml", "ultrafeedback_aot.yaml")
CPU = {"bf16": False}  # the real configs train in bfloat16 on GPUs


def real(name: str) -> dict:
    return load_config(REPO / "configs" / name)


# ------------------------------------------------------------------------------- config loading
def test_overrides_and_unknown_keys():
    cfg = {"training": {"learning_rate": 1e-5}, "rewards": [{"type": "length"}]}
    out = apply_overrides(cfg, ["training.learning_rate=2e-6", "training.new.deep=[a, b]", "rewards.0.target=40",
                                "name=null"])
    assert out["training"] == {"learning_rate": 2e-6, "new": {"deep": ["a", "b"]}}
    assert out["rewards"][0] == {"type": "length", "target": 40} and out["name"] is None
    assert cfg["training"] == {"learning_rate": 1e-5}  # the input is not modified
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["training.learning_rate"])
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides(cfg, ["training.learning_rate.x=1"])
    with pytest.raises(ConfigError, match="index 3 out of range"):
        apply_overrides(cfg, ["rewards.3.target=1"])

    from multidom.app.evaluate import EvaluateConfig

    with pytest.raises(ConfigError, match="unknown key 'n_bot' in evaluate section; did you mean 'n_boot'"):
        from_mapping(EvaluateConfig, {"n_bot": 10}, "evaluate")
    ok = {"models": [{"path": "a"}, {"path": "b"}], "prompts": ["p"], "rewards": ["length"]}
    with pytest.raises(ConfigError, match="unknown estimator 'sinkorn'; did you mean 'sinkhorn'"):
        from_mapping(EvaluateConfig, {**ok, "dominance": ["quantile", "sinkorn"]}, "evaluate")
    with pytest.raises(ConfigError, match="evaluate.estimators was renamed in multidom 0.2: use dominance"):
        from_mapping(EvaluateConfig, {**ok, "estimators": ["quantile"]}, "evaluate")
    with pytest.raises(ConfigError, match="at least 2 models"):
        from_mapping(EvaluateConfig, {**ok, "models": {"only": "a"}}, "evaluate")
    with pytest.raises(ConfigError, match="models.1..trust_remote_code must be true or false"):
        from_mapping(EvaluateConfig, {**ok, "models": [{"path": "a"}, {"path": "b", "trust_remote_code": "false"}]},
                     "evaluate")
    with pytest.raises(ConfigError, match="n_boot must be an integer"):
        from_mapping(EvaluateConfig, {**ok, "n_boot": "many"}, "evaluate")
    parsed = from_mapping(EvaluateConfig, {**ok, "dominance": "sliced"}, "evaluate")
    assert [s.estimator for s in parsed.specs] == ["sliced"]


def test_load_yaml_errors(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    (tmp_path / "obj.yaml").write_text("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="mapping at top level"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):  # safe loader: no Python objects
        load_config(tmp_path / "obj.yaml")


@pytest.mark.parametrize("name", REAL)
def test_real_configs_document_the_multi_gpu_command(name):
    text = (REPO / "configs" / name).read_text()
    assert f"accelerate launch --num_processes 8 -m multidom train --config configs/{name}" in text.replace("\\\n#", "")
    assert f"multidom train --config configs/{name}" in text


def _plan(name: str, tmp_path: Path):
    from multidom.app.recipes import plan

    cfg = real(name)
    trainer = cfg.pop("trainer")
    cfg["training"] = {**cfg["training"], **CPU}
    cfg["model"] = {**cfg["model"], "dtype": "float32"}
    return trainer, cfg, plan(trainer, cfg, str(tmp_path))


def test_real_configs_parse_into_the_trainers_configs(tmp_path):
    trainer, hh, p = _plan("hh_rlhf_online.yaml", tmp_path)
    assert trainer == "online" and p.args.num_generations == 8 and p.args.beta == 0.04
    assert p.args.dominance.estimator == "sinkhorn" and p.args.dominance.options == {"reg": 0.1}
    assert [r["type"] for r in p.rewards] == ["hf_classifier", "hf_classifier"]
    assert [r["name"] for r in p.rewards] == ["harmless", "helpful"]
    assert [r["template"] for r in p.rewards] == ["hh", "hh"]  # the format the HH reward models were trained on
    assert p.model.peft["r"] == 16

    trainer, hs, p = _plan("helpsteer2_offline.yaml", tmp_path)
    assert trainer == "offline" and p.args.dominance.estimator == "sinkhorn"
    assert p.args.dominance.options == {"reg": 0.1} and p.args.dominance.cost == "logistic"
    assert hs["data"]["reward_columns"] == ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]

    trainer, uf, p = _plan("ultrafeedback_aot.yaml", tmp_path)
    assert trainer == "aot" and p.args.pairing == "unpaired" and p.args.beta == 0.01 and p.args.global_batch
    assert p.args.dominance.cost == "logistic" and p.args.dominance.estimator == "quantile"


#: rows of the real datasets (HH: the config's max_samples) and whether a row is a prompt with G generations
SIZES = {"hh_rlhf_online.yaml": 4096, "ultrafeedback_aot.yaml": 61_135, "helpsteer2_offline.yaml": 10_000}


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("gpus", [1, 8])
def test_real_config_schedules_fit_the_data_and_the_world_size(name, gpus, tmp_path):
    """Warmup, evaluation and saving happen within the run on 1 and on 8 GPUs; LoRA gets a LoRA learning rate."""
    import math

    trainer, _, p = _plan(name, tmp_path)
    a = p.args
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps * gpus  # completions online
    rows = SIZES[name] * (a.num_generations if trainer == "online" else 1)
    steps = math.ceil(rows / per_step) * a.num_train_epochs
    assert steps >= 50, (name, gpus, steps)
    for key in ("save_steps", "eval_steps", "warmup_steps"):
        value = getattr(a, key)
        if value:
            at = value * steps if value < 1 else value
            assert at <= steps / 2, (key, value, steps)  # reached, and more than once for save/eval
    assert 0 < a.warmup_steps < 1  # warmup as a ratio of the run
    assert p.model.peft and a.learning_rate >= 5e-6  # LoRA: ~10x a full-fine-tune rate


@pytest.mark.parametrize("old, new", [
    ("training.reg=0.1", "training.reg was renamed in multidom 0.2: use dominance.options.reg"),
    ("training.estimator=quantile", "training.estimator was renamed in multidom 0.2: use dominance.estimator"),
    ("training.cost_beta=2.0", "training.cost_beta was renamed in multidom 0.2: use dominance.cost_gain"),
    ("training.estimator_kwargs={tol: 1}", "training.estimator_kwargs was renamed in multidom 0.2: use dominance.options"),
    ("training.normalisation=cdf", "training.normalisation was renamed in multidom 0.2: use dominance.normalisation"),
    ("peft={r: 8}", "peft was renamed in multidom 0.2: use model.peft"),
    ("dominance.reg=0.1", "dominance.reg was renamed: use dominance.options.reg"),
    ("dominance.options.foo=1", "option.*'foo'.*do not apply to estimator 'sinkhorn'"),
    ("training.learning_rate=fast", "training.learning_rate must be a number, got 'fast'"),
    ("training.beta='0.1'", "training.beta must be a number, got '0.1'"),
    ("training.num_generations=0", "num_generations must be >= 2"),
    ("model.trust_remote_code='false'", "trust_remote_code must be true or false"),
    ("training.trust_remote_code=true", "training.trust_remote_code is not read here.*set model.trust_remote_code"),
])
def test_old_names_and_bad_values_are_one_line_errors_before_loading(old, new, tmp_path):
    from multidom.app.recipes import plan

    cfg = apply_overrides(real("hh_rlhf_online.yaml"), [old, "model.dtype=float32", "training.bf16=false"])
    cfg.pop("trainer")
    with pytest.raises(ConfigError, match=new):
        plan("online", cfg, str(tmp_path))


# ------------------------------------------------------------------------------- tiny stand-ins
@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    """A tiny causal LM and a tiny one-logit reward classifier (same word-level tokenizer), saved to tmp."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    root = tmp_path_factory.mktemp("standins")
    lm = save_tiny_lm(root / "lm")
    tok = AutoTokenizer.from_pretrained(lm)
    torch.manual_seed(3)
    rm = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id))
    rm.save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    return {"lm": lm, "rm": root / "rm", "root": root}


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _train_one_step(capsys, cfg: dict, out: Path) -> dict:
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = cli.main(["train", "--config", str(path), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_hh_rlhf_online_builds_and_steps_with_standins(standins, tmp_path, capsys):
    cfg = real("hh_rlhf_online.yaml")
    cfg["model"] = {**cfg["model"], "name_or_path": str(standins["lm"]), "dtype": "float32"}
    # HH-style multi-turn conversational preference rows without a prompt column: the prompt is every turn
    # before the last answer (TRL's extract_prompt), and the reward models see all of it (template: hh)
    turns = [_user(p) + _assistant("hi") + _user("why") for p in PROMPTS]
    cfg["data"]["path"] = _jsonl(tmp_path / "hh.jsonl", [
        {"chosen": t + _assistant("good"), "rejected": t + _assistant("bad")} for t in turns])
    for spec in cfg["rewards"]:
        spec.update(model=str(standins["rm"]), device="cpu", max_length=64)
    cfg["training"].update(CPU, max_steps=1, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                           num_generations=2, baseline_samples=2, max_completion_length=6, save_steps=1,
                           gradient_checkpointing=False, report_to="none", all_estimators_steps=0, plot_steps=0)
    summary = _train_one_step(capsys, cfg, tmp_path / "hh")
    assert summary["trainer"] == "online" and summary["global_step"] == 1
    assert summary["reward_attributes"] == ["harmless", "helpful"]
    assert Path(summary["model_path"]).is_dir()
    cache = json.loads((tmp_path / "hh" / "baseline_cache.json").read_text())
    prompts = [json.loads(k) for k in cache["rows"]]
    assert sorted(map(json.dumps, prompts)) == sorted(json.dumps(t, sort_keys=True) for t in turns)  # whole turns
    assert all(len(v) == 2 for pts in cache["rows"].values() for v in pts)
    assert [m["template"] for m in cache["key"]["bank"]] == ["hh", "hh"]


@pytest.mark.slow
def test_helpsteer2_offline_builds_and_steps_with_standins(standins, tmp_path, capsys):
    cfg = real("helpsteer2_offline.yaml")
    cfg["model"] = {**cfg["model"], "name_or_path": str(standins["lm"]), "dtype": "float32"}
    attrs = cfg["data"]["reward_columns"]
    rows = [{"prompt": p, "response": ["good day", "bad rain"],
             **{a: [4 - i % 3, i % 5] for i, a in enumerate(attrs)}} for p in PROMPTS]  # grouped HelpSteer2 rows
    cfg["data"]["train"] = _jsonl(tmp_path / "hs_train.jsonl", rows)
    cfg["data"]["eval"] = _jsonl(tmp_path / "hs_eval.jsonl", rows[:2])
    cfg["training"].update(CPU, max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                           max_length=64, save_steps=1, eval_steps=1, gradient_checkpointing=False,
                           report_to="none")
    summary = _train_one_step(capsys, cfg, tmp_path / "hs")
    assert summary["trainer"] == "offline" and summary["global_step"] == 1
    assert "eval" in summary and Path(summary["model_path"]).is_dir()


@pytest.mark.slow
def test_ultrafeedback_aot_builds_and_steps_with_standins(standins, tmp_path, capsys):
    cfg = real("ultrafeedback_aot.yaml")
    cfg["model"] = {**cfg["model"], "name_or_path": str(standins["lm"]), "dtype": "float32"}
    # trl-lib/ultrafeedback_binarized rows: conversational chosen / rejected, no prompt column (TRL's
    # extract_prompt takes the shared turns as the prompt)
    rows = [{"chosen": _user(p) + _assistant("good great day"), "rejected": _user(p) + _assistant("bad"),
             "score_chosen": 8.0, "score_rejected": 3.0} for p in PROMPTS]
    cfg["data"]["train"] = {"path": _jsonl(tmp_path / "uf_train.jsonl", rows), "split": "train"}
    cfg["data"]["eval"] = {"path": _jsonl(tmp_path / "uf_test.jsonl", rows[:2]), "split": "train"}
    cfg["training"].update(CPU, max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                           max_length=64, save_steps=1, eval_steps=1, gradient_checkpointing=False,
                           report_to="none")
    summary = _train_one_step(capsys, cfg, tmp_path / "uf")
    assert summary["trainer"] == "aot" and summary["global_step"] == 1
    assert "eval" in summary and Path(summary["model_path"]).is_dir()


@pytest.mark.slow
def test_evaluate_hh_rlhf_runs_with_standins(standins, tmp_path, capsys):
    from multidom.app.evaluate import EvaluateConfig

    cfg = real("evaluate_hh_rlhf.yaml")
    parsed = from_mapping(EvaluateConfig, cfg, "evaluate")
    assert list(parsed.model_specs) == ["reference", "dominance"]
    assert [s.estimator for s in parsed.specs] == ["quantile", "sliced", "sinkhorn"]
    assert parsed.specs[2].options["reg"] == 0.05 and parsed.prompts["split"] == "test"
    cfg["models"] = [{"name": "reference", "path": str(standins["lm"])},
                     {"name": "dominance", "path": str(standins["lm"])}]
    cfg["prompts"] = {"path": _jsonl(tmp_path / "test.jsonl", [{"prompt": _user(p)} for p in PROMPTS]),
                      "column": "prompt", "limit": 3}
    for spec in cfg["rewards"]:
        spec.update(model=str(standins["rm"]), device="cpu")
    cfg.update(num_generations=2, max_new_tokens=5, n_boot=20, report_to=[], html=False)
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = cli.main(["evaluate", "--config", str(path), "--output-dir", str(tmp_path / "eval")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["attributes"] == ["harmless", "helpful"] and report["n_prompts"] == 3
    # the same model twice: no KL, and every estimator finds a tie
    assert report["kl"]["dominance"]["kl"] == 0.0
    for est in ("quantile", "sliced", "sinkhorn"):
        assert report["dominance"][est]["eps"][1][0] == pytest.approx(0.5, abs=1e-6)
