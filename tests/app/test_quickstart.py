"""The embedded quickstart: data split, tokenizer/chat template, SFT labels and cache, config errors,
the success criteria, and a heavily shrunk end-to-end run (SFT -> MultiDomTrainer -> evaluation)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from multidom.app.config import load_config
from multidom.app.quickstart import QuickstartConfig, format_table, run_quickstart, targets_met
from multidom.app.quickstart.data import ChatPair, load_chatterbot_pairs, split_by_prompt
from multidom.app.quickstart.lm import CHAT_TEMPLATE, TinyLMConfig, build_model, train_tokenizer
from multidom.app.quickstart.pipeline import SPEC_DEFAULTS, TRAINING_DEFAULTS, format_timings
from multidom.app.quickstart.sft import SFTConfig, cache_key, encode_pairs, load_or_train_sft, load_sft

PAIRS = [ChatPair("hello there", "hi, nice to see you"), ChatPair("how are you", "great, thanks"),
         ChatPair("what is your name", "I am a tiny bot"), ChatPair("good bye", "see you soon")]


@pytest.fixture(scope="module")
def corpus():
    return load_chatterbot_pairs()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer([p.prompt for p in corpus] + [p.response for p in corpus], 320)


def test_chatterbot_pairs_and_split_are_disjoint_by_prompt(corpus):
    assert len(corpus) > 900 and len(set(corpus)) == len(corpus)
    assert all(len(p.response.split()) <= 24 and "```" not in p.response for p in corpus)
    train, held = split_by_prompt(corpus, eval_fraction=0.12, seed=0)
    assert not {p.prompt for p in train} & set(held)
    assert 0.05 < len(held) / len({p.prompt for p in corpus}) < 0.2
    assert split_by_prompt(list(reversed(corpus)), eval_fraction=0.12, seed=0)[1] == held  # order-free
    assert split_by_prompt(corpus, eval_fraction=0.12, seed=1)[1] != held
    with pytest.raises(ValueError, match="eval_fraction"):
        split_by_prompt(corpus, eval_fraction=1.0)


def test_tokenizer_round_trip_and_chat_template(tokenizer):
    text = "Hello, how are you? I'm fine -- 42 émojis 🙂"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # byte-level: nothing is unknown
    assert tokenizer.chat_template == CHAT_TEMPLATE
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == "<|bos|><|user|>Hi<|eos|><|assistant|>"
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|pad|>"


def test_encode_pairs_labels_only_the_response(tokenizer):
    ids, mask, labels = encode_pairs(PAIRS[:2], tokenizer, max_length=64)
    for row in range(2):
        pair = PAIRS[row]
        prefix = tokenizer.apply_chat_template([{"role": "user", "content": pair.prompt}],
                                               add_generation_prompt=True)["input_ids"]
        n = int(mask[row].sum())
        assert ids[row, : len(prefix)].tolist() == list(prefix)
        assert (labels[row, : len(prefix)] == -100).all() and (labels[row, n:] == -100).all()
        target = labels[row, len(prefix): n].tolist()
        assert tokenizer.decode(target) == pair.response + "<|eos|>"
    with pytest.raises(ValueError, match="max_length"):
        encode_pairs(PAIRS[:1], tokenizer, max_length=3)


def test_sft_learns_and_is_cached(tmp_path):
    model_cfg = TinyLMConfig(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                             max_length=32)
    sft_cfg = SFTConfig(epochs=30, batch_size=4, learning_rate=1e-2)
    path, summary = load_or_train_sft(PAIRS, model_config=model_cfg, sft_config=sft_cfg, cache_dir=tmp_path,
                                      key_parts={"data": "toy"}, progress=False)
    assert not summary["cached"] and summary["final_loss"] < 3.0  # from log(300) = 5.7 at random init
    again, summary2 = load_or_train_sft(PAIRS, model_config=model_cfg, sft_config=sft_cfg, cache_dir=tmp_path,
                                        key_parts={"data": "toy"}, progress=False)
    assert again == path and summary2["cached"] and summary2["key"] == summary["key"]
    other = cache_key(model=model_cfg, sft=SFTConfig(epochs=31, batch_size=4, learning_rate=1e-2), seed=0,
                      data="toy")
    assert other != summary["key"]
    model, tok = load_sft(path)
    assert sum(p.numel() for p in model.parameters()) == summary["parameters"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary directory left behind


@pytest.mark.parametrize("stage", ["train", "save"])
def test_sft_interrupted_leaves_no_temporary_directory(tmp_path, monkeypatch, stage):
    # Ctrl-C while training (nothing written yet) or after the temporary directory has files in it: the
    # cache directory ends up empty, and the next run trains from scratch and caches normally.
    import transformers

    import multidom.app.quickstart.sft as sft

    model_cfg = TinyLMConfig(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                             max_length=32)
    sft_cfg = SFTConfig(epochs=1, batch_size=4)
    kw = dict(model_config=model_cfg, sft_config=sft_cfg, cache_dir=tmp_path, key_parts={"data": "toy"}, progress=False)
    seen = []
    if stage == "train":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(sft, "_train", interrupted)
    else:
        original = transformers.PreTrainedTokenizerFast.save_pretrained

        def interrupted(self, path, *args, **kwargs):
            original(self, path, *args, **kwargs)
            seen.append(sorted(p.name for p in tmp_path.iterdir()))
            raise KeyboardInterrupt
        monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_or_train_sft(PAIRS, **kw)
    if stage == "save":  # the interrupt really came while the temporary directory existed
        assert len(seen) == 1 and len(seen[0]) == 1 and ".tmp-" in seen[0][0]
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    path, summary = load_or_train_sft(PAIRS, **kw)
    assert not summary["cached"] and [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("progress", [True, False])
def test_generation_progress_bar(tokenizer, capsys, progress):
    from multidom.lm.generation import Sampling, generate

    model = build_model(TinyLMConfig(vocab_size=320, hidden_size=16, num_layers=1, num_heads=2,
                                     intermediate_size=32), tokenizer)
    prompts = [[{"role": "user", "content": q}] for q in ("hi", "how are you", "bye")]
    capsys.readouterr()
    gens = generate(model, tokenizer, prompts, 2, sampling=Sampling(max_new_tokens=2), batch_size=2,
                    progress=progress, desc="baseline cloud")
    err = capsys.readouterr().err
    assert [len(c) for c in gens.completions] == [2, 2, 2] and [len(i) for i in gens.completion_ids] == [2, 2, 2]
    if progress:  # 3 prompts in batches of 2, counted from 0 to 3
        assert "baseline cloud" in err and "0/3" in err and "3/3 " in err
    else:
        assert err == ""


def test_build_model_shape(tokenizer):
    model = build_model(TinyLMConfig(vocab_size=320, hidden_size=16, num_layers=1, num_heads=2,
                                     intermediate_size=32), tokenizer)
    assert model.config.vocab_size == len(tokenizer) and model.config.tie_word_embeddings
    with pytest.raises(ValueError, match="divisible"):
        TinyLMConfig(hidden_size=10, num_heads=4)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown key 'epoch' in sft section; did you mean 'epochs'"):
        QuickstartConfig.from_mapping({"sft": {"epoch": 3}})
    with pytest.raises(ValueError, match="unknown key 'trainig' in quickstart section; did you mean 'training'"):
        QuickstartConfig.from_mapping({"trainig": {}})
    with pytest.raises(ValueError, match="training.output_dir is set by the quickstart"):
        QuickstartConfig.from_mapping({"training": {"output_dir": "x"}})
    with pytest.raises(ValueError, match="data.eval_fraction"):
        QuickstartConfig.from_mapping({"data": {"eval_fraction": 0}})


def test_bad_training_key_and_reward_fail_before_sft(tmp_path):
    base = {"cache_dir": str(tmp_path / "cache")}
    with pytest.raises(ValueError, match="unknown key 'lerning_rate' in training section; did you mean 'learning_rate'"):
        run_quickstart({**base, "training": {"lerning_rate": 1e-3}}, output_dir=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="sentimant"):
        run_quickstart({**base, "rewards": ["sentimant"]}, output_dir=str(tmp_path / "b"))
    assert not (tmp_path / "cache").exists()  # nothing was trained


def test_shipped_config_parses():
    config = load_config("configs/quickstart.yaml")
    assert config.pop("trainer") == "quickstart"
    cfg = QuickstartConfig.from_mapping(config)
    assert [r if isinstance(r, str) else r["type"] for r in cfg.rewards] == [
        "sentiment", "non_offensive", "relevance", "brevity"]
    assert cfg.training["beta"] > 0 and cfg.evaluation.eps0 == 0.4
    assert [s.estimator for s in cfg.evaluation.specs] == ["quantile", "sliced", "sinkhorn"]
    # `run_quickstart({})` (no YAML at hand, e.g. an installed wheel) runs the same quickstart
    code = QuickstartConfig.from_mapping({})
    for section in ("seed", "data", "tiny_lm", "sft", "rewards"):
        assert getattr(cfg, section) == getattr(code, section), section
    assert cfg.evaluation.specs == code.evaluation.specs
    assert {**TRAINING_DEFAULTS, **cfg.training} == TRAINING_DEFAULTS
    assert {**SPEC_DEFAULTS, **cfg.dominance} == {**SPEC_DEFAULTS, "cost_gain": 1.0, "margin": 0.0, "options": {}}


def _result(eps, high, deltas, ses):
    attrs = [f"a{k}" for k in range(len(deltas))]
    stat = {a: {"mean": 1.0 + dl, "q10": 0.5, "delta": dl, "se": s} for a, dl, s in zip(attrs, deltas, ses)}
    return {"models": ["sft", "aligned"], "attributes": attrs, "n_prompts": 10, "G": 2,
            "stats": {"sft": {a: {"mean": 1.0, "q10": 0.5, "delta": 0.0, "se": 0.1} for a in attrs},
                      "aligned": stat},
            "dominance": {"quantile": {"eps": [[0.5, 1 - eps], [eps, 0.5]], "low": [[0, 0], [eps - 0.1, 0]],
                                       "high": [[0, 0], [high, 0]]}},
            "kl": {"aligned": {"kl": 0.25, "kl_se": 0.01}}}


def test_targets_met_criteria():
    ok = targets_met(_result(0.3, 0.45, [0.2, -0.05], [0.1, 0.1]))
    assert ok["all_met"] and ok["attributes_worse"] == [] and ok["estimator"] == "quantile"
    # eps = 0.3 < 0.4 but its upper end 0.55 >= 0.5
    assert not targets_met(_result(0.3, 0.55, [0.2, 0.0], [0.1, 0.1]))["all_met"]
    # a2 falls by 0.15 > its se 0.1
    worse = targets_met(_result(0.3, 0.45, [0.2, -0.15], [0.1, 0.1]))
    assert not worse["all_met"] and worse["attributes_worse"] == ["a1"]
    table = format_table(_result(0.3, 0.45, [0.2, -0.05], [0.1, 0.1]), ok, report="r.md")
    assert "eps(aligned ≽ sft) [quantile] = 0.300  90% interval [0.200, 0.450]" in table
    assert "KL(aligned || sft) = 0.250" in table and table.endswith("report: r.md")


@pytest.mark.slow
def test_format_timings_reports_the_baseline_share():
    t = {"sft_s": 60.0, "align_s": 200.0, "align_cpu_s": 180.0, "baseline_s": 20.0, "baseline_cpu_s": 9.0,
         "eval_s": 40.0, "total_s": 300.0}
    line = format_timings(t)
    assert "alignment 200 s (of which the baseline cloud 20 s = 10.0% wall, 5.0% CPU)" in line
    assert line.startswith("time: SFT 60 s") and line.endswith("total 300 s")


def test_quickstart_end_to_end_shrunk(tmp_path, capsys):
    torch.manual_seed(0)
    config = {
        "seed": 0, "cache_dir": str(tmp_path / "cache"),
        "data": {"align_prompts": 8, "max_eval_prompts": 6},
        "tiny_lm": {"vocab_size": 300, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                  "max_length": 48},
        "sft": {"epochs": 1, "batch_size": 64},
        "training": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8,
                     "baseline_samples": 4, "max_completion_length": 8, "logging_steps": 1, "save_steps": 1,
                     "plot_steps": 0, "all_estimators_steps": 0, "report_to": "none"},
        "evaluation": {"num_generations": 2, "n_boot": 20, "dominance": ["quantile", "sliced"]},
    }
    out = tmp_path / "run"
    summary = run_quickstart(config, output_dir=str(out))
    printed = capsys.readouterr().out
    assert "eps(aligned ≽ sft) [quantile]" in printed and f"report: {out / 'report'}" in printed
    ev = summary["evaluation"]
    assert ev["attributes"] == ["sentiment", "non_offensive", "relevance", "brevity"]
    assert ev["n_prompts"] == 6 and ev["G"] == 2
    numbers = [ev["kl"]["aligned"]["kl"]]
    for est in ("quantile", "sliced"):
        dom = ev["dominance"][est]
        numbers += [dom["eps"][1][0], dom["low"][1][0], dom["high"][1][0]]
        assert dom["eps"][1][0] + dom["eps"][0][1] == pytest.approx(1.0, abs=1e-6)
    for model in ("sft", "aligned"):
        for attr in ev["attributes"]:
            numbers += [ev["stats"][model][attr][k] for k in ("mean", "q10", "se")]
    assert all(math.isfinite(x) for x in numbers)
    assert summary["global_step"] == 2 and summary["sft"]["cached"] is False
    for key in ("markdown", "json"):
        assert (out / "report" / summary["report_paths"][key].split("/")[-1]).is_file()
    assert any(p.suffix == ".png" for p in (out / "report").rglob("*"))
    rows = [json.loads(line) for line in (out / "align" / "metrics.jsonl").read_text().splitlines()]
    assert any("dominance/quantile/eps" in r for r in rows) and any("kl" in r for r in rows)
    assert (out / "aligned" / "model.safetensors").is_file() and any((out / "align").glob("checkpoint-*"))
    saved = json.loads((out / "quickstart_summary.json").read_text())
    assert saved["targets"]["estimator"] == "quantile"
    t = summary["timings"]  # the baseline cloud (8 prompts x 4 samples, cold cache) is part of the alignment
    assert 0 < t["baseline_s"] < t["align_s"] < t["total_s"] and 0 < t["baseline_cpu_s"] < t["align_cpu_s"]
    assert f"of which the baseline cloud {t['baseline_s']:.0f} s" in printed
    # second run: the SFT model comes from the cache, alignment resumes from the last checkpoint
    again = run_quickstart(config, output_dir=str(out), resume=True)
    assert again["sft"]["cached"] is True and again["resumed_from"] is not None
