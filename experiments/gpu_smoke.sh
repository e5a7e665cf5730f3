#!/usr/bin/env bash
# GPU smoke test of multidom (issue 11): one GPU, no network, under 10 minutes.
#
#   bash experiments/gpu_smoke.sh [OUT_DIR]          # default OUT_DIR=/tmp/multidom_gpu_smoke
#
# 1. builds a ~100M-parameter Llama (hidden 768, 12 layers, vocab 8192, random weights, bf16) and a word-level
#    tokenizer with a chat template, locally, plus tiny prompt / preference files;
# 2. runs 6 bf16 steps of the online dominance trainer (reference baseline sampled first; rule rewards) and
#    6 bf16 steps of global-batch AOT, through the CLI in this process;
# 3. if vLLM is importable (it is not installed here: no network), precomputes the baseline with
#    `multidom baseline` through vLLM (training.use_vllm=true) and trains 2 steps on it (baseline_source: column);
# 4. prints, per job, wall time, step times (train_runtime / steps) and peak GPU memory.
#
# What it checks: the bf16 CUDA paths (generation, per-prompt seeded baseline sampling, fused log-prob head,
# global-batch backward) run and how much they cost. What it does not: multi-GPU engines (ZeRO-3 / FSDP need
# `accelerate launch` on several GPUs), model quality. Not run in CI (no GPU there); `bash -n` checks it parses.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/multidom_gpu_smoke}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
mkdir -p "$OUT"
START=$(date +%s)

"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path

import torch

out = Path(sys.argv[1])
assert torch.cuda.is_available(), "gpu_smoke.sh needs a CUDA GPU"
print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)

# ---- 1. a ~100M-parameter model and its tokenizer, built locally ---------------------------------------------
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
words = [f"w{i}" for i in range(8192 - len(specials) - 12)] + \
        "hello good day sun rain nice bad happy sad weather today you".split()
vocab = {w: i for i, w in enumerate(specials + words)}
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                               unk_token="<unk>")
fast.chat_template = ("{{ bos_token }}{% for m in messages %}{{ m['role'] + ' ' + m['content'] + ' ' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ 'assistant' }}{% endif %}")
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512, bos_token_id=1,
                  eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
model = LlamaForCausalLM(cfg).to(torch.bfloat16)
n = sum(p.numel() for p in model.parameters())
print(f"model: {n / 1e6:.0f}M parameters", flush=True)
model.save_pretrained(out / "lm")
fast.save_pretrained(out / "lm")

import random
rng = random.Random(0)
common = "hello good day sun rain nice bad happy sad weather today you".split()
prompts = [" ".join(rng.choice(common) for _ in range(8)) for _ in range(64)]
(out / "pref.jsonl").write_text("".join(json.dumps({
    "prompt": [{"role": "user", "content": p}],
    "chosen": [{"role": "assistant", "content": "good nice day " * 20}],
    "rejected": [{"role": "assistant", "content": "bad rain sad " * 20}]}) + "\n" for p in prompts))
(out / "prompts.json").write_text(json.dumps(prompts))
PY

"$PY" - "$OUT" <<'PY'
import json, sys, time
from pathlib import Path

import torch
import yaml

from multidom.app import cli

out = Path(sys.argv[1])
prompts = json.loads((out / "prompts.json").read_text())
rewards = [{"type": "length", "unit": "words", "target": 24}, {"type": "regex", "pattern": "good|nice|sun"}]
online = {
    "trainer": "online", "model": {"name_or_path": str(out / "lm"), "dtype": "bfloat16"},
    "data": {"prompts": prompts, "chat": True}, "rewards": rewards, "dominance": {"estimator": "quantile"},
    "training": {"bf16": True, "max_steps": 6, "per_device_train_batch_size": 64, "num_generations": 8,
                 "baseline_samples": 8, "max_completion_length": 64, "learning_rate": 1e-5, "beta": 0.04,
                 "logging_steps": 1, "save_strategy": "no", "report_to": "none", "plot_steps": 0,
                 "all_estimators_steps": 3, "seed": 0},
}
aot = {
    "trainer": "aot", "model": {"name_or_path": str(out / "lm"), "dtype": "bfloat16"},
    "data": {"train": str(out / "pref.jsonl")},
    "training": {"bf16": True, "max_steps": 6, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2,
                 "learning_rate": 1e-5, "beta": 0.01, "max_length": 256, "logging_steps": 1, "save_strategy": "no",
                 "report_to": "none", "global_batch": True, "seed": 0},
}


def run(name, config, extra=()):
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    code = cli.main(["train", "--config", str(path), "--output-dir", str(out / name), *extra])
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30
    rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    end = next((r for r in rows if "train_runtime" in r), {})
    steps = config["training"]["max_steps"]
    timing = {k: v for r in rows for k, v in r.items() if k.startswith("timing/")}
    print(f"[{name}] exit {code}, wall {wall:.1f} s, train {end.get('train_runtime', float('nan')):.1f} s "
          f"= {end.get('train_runtime', float('nan')) / steps:.2f} s/step, peak GPU memory {peak:.2f} GiB"
          + (f", last timings {timing}" if timing else ""), flush=True)
    assert code == 0, f"{name} failed"


run("online_bf16", online)
run("aot_bf16", aot)

try:
    import vllm  # noqa: F401
except Exception as exc:  # not installed (no network here) or no GPU build
    print(f"[vllm] skipped: vLLM not importable ({type(exc).__name__})", flush=True)
else:
    cfg = json.loads(json.dumps(online))
    cfg["training"].update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3)
    path = out / "vllm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    code = cli.main(["baseline", "--config", str(path), "--output", str(out / "baseline.jsonl")])
    print(f"[vllm baseline] exit {code}, {time.perf_counter() - t0:.1f} s for {len(prompts)} prompts x 8", flush=True)
    assert code == 0
    cfg["data"] = {"path": str(out / "baseline.jsonl"), "prompt_column": "prompt"}
    cfg["training"].update(baseline_source="column", use_vllm=False, max_steps=2)
    run("online_from_vllm_baseline", cfg)
PY
echo "gpu_smoke: done in $(( $(date +%s) - START )) s; outputs in $OUT"
