"""AOT with multidom (per-micro-batch and global-batch) against TRL's DPOTrainer(loss_type="aot_unpaired").

What it reproduces: the setting of the AOT paper's batch-size argument (arXiv 2406.05882, Figure 2: the
sort sees more samples when it runs on the global batch), on a tiny random-weight character-level Llama and
a small preference set built offline from chatterbot-corpus: prompt = a line of a conversation, chosen =
the next line lower-cased with letters and spaces only, rejected = the same words shuffled (so the two differ by
word order alone; pairs left unchanged are dropped).
What it does not: any LLM-scale quality claim (AlpacaEval etc.); the model is tiny and trained from scratch
for a few dozen steps, so only relative speed / memory and the direction of the held-out violation ratio mean
anything.

Measured per method and accumulation setting (each run in its own subprocess, threads pinned to 1):
* step time: median wall time of an optimizer step (callback on_step_begin -> on_step_end) after warm-up;
* peak memory: the process's peak resident set (ru_maxrss) minus its resident set right before training;
* held-out violation ratio: ``eps`` of the chosen over the rejected log-ratios (hinge cost, quantile
  estimator: 0 = the chosen distribution dominates, 1/2 = no preference) on held-out pairs at the end.

    OMP_NUM_THREADS=1 python experiments/aot_vs_trl.py            # writes experiments/results/aot_vs_trl.{json,md}
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
METHODS = ("trl_aot_unpaired", "multidom_micro_batch", "multidom_global_batch")
CURVE_STEPS = (1, 2, 4, 8, 16)


# ----------------------------------------------------------------------------- data and model
def corpus_pairs(seed: int = 0, max_chars: int = 64) -> list[dict]:
    """Preference rows from chatterbot-corpus (English): chosen = the real reply, rejected = its words shuffled."""
    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    rng = random.Random(seed)
    rows = []
    for path in sorted(root.glob("*.yml")):
        for conv in yaml.safe_load(path.read_text()).get("conversations", []):
            lines = [str(x).strip() for x in conv if isinstance(x, (str, int, float)) and str(x).strip()]
            for a, b in zip(lines, lines[1:]):
                a = a[:max_chars]
                # lower case, letters and spaces only: the two replies then differ by word order alone
                b = " ".join("".join(c for c in b.lower() if c.isalpha() or c == " ").split())[:max_chars]
                words = b.split()
                rng.shuffle(words)
                bad = " ".join(words)
                if bad != b:
                    rows.append({"prompt": f"User: {a}\nBot:", "chosen": " " + b, "rejected": " " + bad})
    rng.shuffle(rows)
    return rows


def char_tokenizer():
    import string

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<unk>"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def tiny_llama(vocab: int, hidden: int, layers: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256, pad_token_id=0,
        eos_token_id=1, bos_token_id=1))


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


# ----------------------------------------------------------------------------- one run (subprocess)
def build(method: str, accumulation: int, a: argparse.Namespace, train: list[dict], tok, reference):
    """The trainer of ``method`` on a fresh copy of ``reference`` (policy) plus a frozen copy (reference)."""
    from datasets import Dataset

    from multidom.trainers.aot import AOTConfig, AOTTrainer

    policy = copy.deepcopy(reference)
    common = dict(output_dir=str(Path(a.tmp) / f"{method}_{accumulation}"), per_device_train_batch_size=a.batch,
                  gradient_accumulation_steps=accumulation, max_steps=a.steps, learning_rate=a.lr, beta=a.beta,
                  lr_scheduler_type="constant", logging_steps=10_000, save_strategy="no", report_to="none",
                  use_cpu=True, max_length=160, seed=0, bf16=False, gradient_checkpointing=False,
                  dataloader_num_workers=0, disable_tqdm=True)
    data = Dataset.from_list(train)
    if method == "trl_aot_unpaired":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(model=policy, ref_model=copy.deepcopy(reference), processing_class=tok,
                          train_dataset=data, args=DPOConfig(loss_type=["aot_unpaired"], **common))
    args = AOTConfig(pairing="unpaired", global_batch=method == "multidom_global_batch", **common)
    return AOTTrainer(policy, args, ref_model=copy.deepcopy(reference), processing_class=tok, train_dataset=data)


def heldout_ratio(trainer, held: list[dict], tok, reference) -> float:
    """``eps`` of chosen over rejected log-ratios on held-out pairs (hinge, quantile): the same code for every method."""
    import multidom
    from multidom.lm.tokenize import SequenceCollator, sequence_logps, tokenize_example
    from multidom.trainers.global_batch import add_log_prob_head

    model = trainer.accelerator.unwrap_model(trainer.model)
    was_training = model.training
    ref = copy.deepcopy(reference).eval()
    add_log_prob_head(model.eval())
    add_log_prob_head(ref)
    ratios = []
    with torch.no_grad():
        for start in range(0, len(held), 32):
            ev = [tokenize_example(tok, r["prompt"], [r["chosen"], r["rejected"]], max_length=160)
                  for r in held[start:start + 32]]
            batch = SequenceCollator(tok.pad_token_id)(ev)
            ratios.append(sequence_logps(model, batch, 2) - sequence_logps(ref, batch, 2))
    model.train(was_training)
    lr = torch.cat(ratios)
    return float(multidom.violation_ratio(lr[:, :1], lr[:, 1:], estimator="quantile", cost="hinge"))


def timing_worker(accumulation: int, a: argparse.Namespace) -> dict:
    """Interleaved step timing in ONE process: the three methods take turns, step by step, on the same batches.

    Each optimizer step runs the Trainer's own pieces in the order ``Trainer._run_epoch`` does:
    ``get_batch_samples`` (where the global-batch plan is built), ``training_step`` per micro-batch,
    ``optimizer.step``, ``zero_grad``. Interleaving cancels the drift of a shared machine's load.
    """
    torch.set_num_threads(1)
    rows = corpus_pairs()
    held, rows = rows[: a.heldout], rows[a.heldout:]
    tok = char_tokenizer()
    reference = tiny_llama(len(tok), a.hidden, a.layers)
    trainers = {m: build(m, accumulation, a, rows, tok, reference) for m in METHODS}
    curve: dict[str, dict[int, float]] = {m: {} for m in METHODS}
    loaders = {}
    for m, tr in trainers.items():
        tr.create_optimizer()
        tr.model.train()
        loaders[m] = iter(tr.get_train_dataloader())
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for step in range(1, a.timing_steps + 1):
        for m, tr in trainers.items():
            t0 = time.perf_counter()
            batches, n_items = tr.get_batch_samples(loaders[m], accumulation, tr.args.device)
            tr.current_gradient_accumulation_steps = len(batches)
            for b in batches:
                tr.training_step(tr.model, b, n_items)
            tr.optimizer.step()
            tr.model.zero_grad()
            times[m].append(time.perf_counter() - t0)
            if step in CURVE_STEPS or step == a.timing_steps:  # outside the timed region
                curve[m][step] = heldout_ratio(tr, held, tok, reference)
    return {m: {"step_time_s_median": statistics.median(t[a.warmup:]), "step_time_s_min": min(t[a.warmup:]),
                "steps": len(t) - a.warmup, "heldout_ratio_curve": curve[m]} for m, t in times.items()}


def worker(method: str, accumulation: int, a: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    from transformers import TrainerCallback

    rows = corpus_pairs()
    held, train = rows[: a.heldout], rows[a.heldout:]
    tok = char_tokenizer()
    reference = tiny_llama(len(tok), a.hidden, a.layers)
    trainer = build(method, accumulation, a, train, tok, reference)

    class Timer(TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    trainer.add_callback(timer)
    rss0 = _rss_kb()
    trainer.train()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0

    eps = heldout_ratio(trainer, held, tok, reference)
    warm = timer.times[a.warmup:]
    return {"method": method, "gradient_accumulation_steps": accumulation, "micro_batch": a.batch,
            "steps": a.steps, "step_time_s_median": statistics.median(warm), "step_time_s_mean": statistics.mean(warm),
            "peak_rss_increase_mb": peak_kb / 1024, "heldout_violation_ratio": float(eps),
            "heldout_pairs": len(held), "train_pairs": len(train)}


# ----------------------------------------------------------------------------- driver
def _run(cmd: list[str], env: dict) -> dict:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=(*METHODS, "timing"))
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--steps", type=int, default=40, help="Optimizer steps of each training run.")
    p.add_argument("--timing-steps", type=int, default=25, help="Interleaved optimizer steps per method for timing.")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--accumulations", type=int, nargs="+", default=[1, 4])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--heldout", type=int, default=128)
    p.add_argument("--tmp", default="/tmp/aot_vs_trl")
    p.add_argument("--out", default=str(HERE / "results"))
    a = p.parse_args()
    if a.worker == "timing":
        print("RESULT " + json.dumps(timing_worker(a.accumulation, a)))
        return
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a.accumulation, a)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    flags = ["--steps", str(a.steps), "--timing-steps", str(a.timing_steps), "--warmup", str(a.warmup),
             "--batch", str(a.batch), "--hidden", str(a.hidden), "--layers", str(a.layers), "--lr", str(a.lr),
             "--beta", str(a.beta), "--heldout", str(a.heldout), "--tmp", a.tmp]
    results, timing = [], {}
    for acc in a.accumulations:
        timing[acc] = _run([sys.executable, __file__, "--worker", "timing", "--accumulation", str(acc), *flags], env)
        print(json.dumps({"timing": acc, **timing[acc]}), flush=True)
        for method in METHODS:
            res = _run([sys.executable, __file__, "--worker", method, "--accumulation", str(acc), *flags], env)
            res["interleaved"] = timing[acc][method]
            results.append(res)
            print(json.dumps(res), flush=True)
    summary = _summarise(results)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "OMP_NUM_THREADS=1 python experiments/aot_vs_trl.py " + " ".join(sys.argv[1:]),
            "torch": torch.__version__, "threads": 1, "device": "cpu (2 cores shared with other jobs)",
            "config": {k: v for k, v in vars(a).items() if k not in ("worker", "out")}}
    (out / "aot_vs_trl.json").write_text(json.dumps({"meta": meta, "runs": results, "summary": summary}, indent=2))
    (out / "aot_vs_trl.md").write_text(_markdown(meta, results, summary))
    print(json.dumps(summary, indent=2))


def _summarise(results: list[dict]) -> dict:
    get = {(r["method"], r["gradient_accumulation_steps"]): r for r in results}
    out = {}
    for acc in sorted({r["gradient_accumulation_steps"] for r in results}):
        trl, micro, glob = (get[(m, acc)] for m in METHODS)

        def t(r):
            return r["interleaved"]["step_time_s_median"]

        out[f"accumulation_{acc}"] = {
            "micro_batch_over_trl_step_time": t(micro) / t(trl),
            "global_over_trl_step_time": t(glob) / t(trl),
            "global_over_micro_batch_step_time": t(glob) / t(micro),
            "global_over_micro_batch_peak_memory": glob["peak_rss_increase_mb"] / max(micro["peak_rss_increase_mb"], 1e-9),
            "heldout_violation_ratio": {m: get[(m, acc)]["heldout_violation_ratio"] for m in METHODS},
        }
    return out


def _markdown(meta: dict, results: list[dict], summary: dict) -> str:
    c, r0 = meta["config"], results[0]
    lines = ["# AOT: multidom (per-micro-batch, global-batch) vs TRL `DPOTrainer(loss_type=\"aot_unpaired\")`", "",
             f"Command: `{meta['command']}` (torch {meta['torch']}, {meta['device']}, 1 thread). Tiny character-level "
             f"Llama (hidden {c['hidden']}, {c['layers']} layers, random init); {r0['train_pairs']} chatterbot-corpus "
             f"pairs (chosen = the real reply, lower-cased, letters only; rejected = the same words shuffled), {r0['heldout_pairs']} held "
             f"out; micro-batch {c['batch']} pairs, beta {c['beta']}, lr {c['lr']}, constant schedule.", "",
             "Step time: median over "
             f"{c['timing_steps'] - c['warmup']} optimizer steps after {c['warmup']} warm-up ones, the three methods "
             "taking turns step by step in one process (a shared machine's load drifts; turns cancel the drift). "
             "Peak memory and the held-out ratio: a separate `trainer.train()` run per method of "
             f"{c['steps']} optimizer steps, each in a fresh process.", "",
             "| method | accumulation | step time (ms) | peak RSS increase (MB) | held-out violation ratio (end) |",
             "|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["gradient_accumulation_steps"], METHODS.index(r["method"]))):
        lines.append(f"| {r['method']} | {r['gradient_accumulation_steps']} | "
                     f"{1000 * r['interleaved']['step_time_s_median']:.1f} | {r['peak_rss_increase_mb']:.1f} | "
                     f"{r['heldout_violation_ratio']:.3f} |")
    steps = sorted({int(k) for r in results for k in r["interleaved"]["heldout_ratio_curve"]})
    lines += ["", "Held-out violation ratio after k optimizer steps (from the interleaved run; same batches for every "
              "method):", "", "| method | accumulation | " + " | ".join(f"k={k}" for k in steps) + " |",
              "|---|---|" + "---|" * len(steps)]
    for r in sorted(results, key=lambda r: (r["gradient_accumulation_steps"], METHODS.index(r["method"]))):
        curve = {int(k): v for k, v in r["interleaved"]["heldout_ratio_curve"].items()}
        lines.append(f"| {r['method']} | {r['gradient_accumulation_steps']} | "
                     + " | ".join(f"{curve[k]:.3f}" for k in steps) + " |")
    lines += ["", "| accumulation | micro-batch / TRL time | global / TRL time | global / micro-batch time | "
              "global / micro-batch peak memory |", "|---|---|---|---|---|"]
    for key, s in summary.items():
        lines.append(f"| {key.split('_')[1]} | {s['micro_batch_over_trl_step_time']:.3f} | "
                     f"{s['global_over_trl_step_time']:.3f} | {s['global_over_micro_batch_step_time']:.3f} | "
                     f"{s['global_over_micro_batch_peak_memory']:.3f} |")
    lines += ["", "Violation ratio: `eps` of the chosen over the rejected log-ratios (hinge cost, quantile estimator) on "
              "the held-out pairs; 0 means the chosen log-ratios dominate, 0.5 no preference (the start). Peak memory "
              "on CPU is the process's peak resident set during training minus its resident set before (it includes "
              "allocator caching); on a GPU one would read `torch.cuda.max_memory_allocated`. The global-batch mode "
              "adds one policy forward pass without gradient per micro-batch (the reference forward of that pass is "
              "cached, not repeated). With accumulation 1 the global batch is the micro-batch, so its sort sees the "
              "same samples as TRL's and only the extra forward pass differs."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
