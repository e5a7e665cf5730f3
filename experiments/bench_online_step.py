"""Cost of an online dominance step against a TRL GRPO step on the same model, baseline sampling amortised in
(issue 11: "the online step costs <= 1.10x a TRL GRPO step").

One process, interleaved: blocks of ``--steps`` optimizer steps alternate between ``trl.GRPOTrainer`` (the bank's
reward functions summed) and :class:`multidom.trainers.online.OnlineDominanceTrainer` (the same bank, quantile
dominance against the reference baseline), ``--rounds`` times, so slow phases of a shared machine hit both.
Same model (the quickstart's shape: Llama, hidden 96, 2 layers, random weights built here), prompts, G, batch,
completion length, KL coefficient; ``learning_rate = 0`` so both sample the same policy (a trained policy
changes completion lengths, hence generation time). Per step: wall time and process CPU time (one thread;
CPU time is the comparison that survives the load of a shared machine), the median over steps.

The online trainer's one-off cost -- sampling and scoring the baseline cloud of every prompt (``baseline_s``,
measured in its constructor) -- is amortised over the quickstart's run: ``--prompts`` prompts (256) over
``--run-steps`` steps (150): ``online_amortised = online_step + baseline_s / run_steps``.

Usage (pinned threads, ~3-6 minutes on a loaded 2-core machine)::

    OMP_NUM_THREADS=1 python experiments/bench_online_step.py --out experiments/results
    OMP_NUM_THREADS=1 python experiments/bench_online_step.py --bank quickstart --baseline-samples 4
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
WORDS_PER_PROMPT = 5
#: reward banks to time with: cheap rules, or the quickstart's four offline models (MiniLM relevance dominates)
BANKS = {
    "rules": [{"type": "length", "unit": "words", "target": 8}, {"type": "regex", "pattern": "day|sun|good"}],
    "quickstart": ["sentiment", "non_offensive", "relevance", {"type": "brevity", "unit": "words"}],
}


class StepTimer(TrainerCallback):
    """Wall and process CPU seconds of each optimizer step."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_begin(self, args, state, control, **kw):
        self._t = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kw):
        self.wall.append(time.perf_counter() - self._t[0])
        self.cpu.append(time.process_time() - self._t[1])


def _prompts(n: int) -> list:
    from lm_tiny import WORDS

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        idx = torch.randint(0, len(WORDS), (WORDS_PER_PROMPT,), generator=g).tolist()
        out.append([{"role": "user", "content": " ".join(WORDS[i] for i in idx)}])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per block")
    ap.add_argument("--rounds", type=int, default=3, help="GRPO/online block pairs")
    ap.add_argument("--prompts", type=int, default=256, help="prompts of the run (each gets a baseline cloud)")
    ap.add_argument("--run-steps", type=int, default=150, help="steps the baseline is amortised over")
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--bank", choices=sorted(BANKS), default="rules",
                    help="'rules': length + regex (cheap scoring); 'quickstart': the quickstart's four offline models")
    ap.add_argument("--baseline-samples", type=int, default=8, help="baseline completions per prompt")
    opts = ap.parse_args()
    load0 = os.getloadavg()[0]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from datasets import Dataset
    from lm_tiny import load, save_tiny_lm
    from trl import GRPOConfig, GRPOTrainer

    from multidom.trainers.online import OnlineDominanceConfig, OnlineDominanceTrainer
    from reward_models import RewardBank

    tmp = Path(tempfile.mkdtemp(prefix="bench_online_"))
    path = save_tiny_lm(tmp / "lm", hidden=opts.hidden)
    specs = BANKS[opts.bank]
    data = Dataset.from_dict({"prompt": _prompts(opts.prompts)})
    common = dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1000,
                  per_device_train_batch_size=64, num_generations=8, max_completion_length=24, temperature=1.0,
                  learning_rate=0.0, beta=0.05, max_steps=opts.steps, seed=0, disable_tqdm=True)

    bank = RewardBank(specs)
    grpo_timer, online_timer = StepTimer(), StepTimer()
    model, tok = load(path)
    grpo = GRPOTrainer(model=model, reward_funcs=list(bank.models), processing_class=tok, train_dataset=data,
                       args=GRPOConfig(output_dir=str(tmp / "grpo"), **common), callbacks=[grpo_timer])
    model, tok = load(path)
    t0 = time.perf_counter()
    online = OnlineDominanceTrainer(
        model, OnlineDominanceConfig(output_dir=str(tmp / "online"), dominance={"estimator": "quantile"},
                                     baseline_samples=opts.baseline_samples, plot_steps=0, all_estimators_steps=0, **common),
        data, RewardBank(specs), processing_class=tok, callbacks=[online_timer])
    construct_s = time.perf_counter() - t0
    # the constructor's baseline share: rerun the baseline alone (no cache) on the same model
    from multidom.trainers.online_baseline import add_baseline_column, as_bank

    t0, c0 = time.perf_counter(), time.process_time()
    add_baseline_column(data, online.args, as_bank(RewardBank(specs)), model=online.accelerator.unwrap_model(online.model),
                        tokenizer=tok)
    baseline_s, baseline_cpu = time.perf_counter() - t0, time.process_time() - c0

    for _ in range(opts.rounds):
        grpo.train()
        online.train()
    g_wall, o_wall = statistics.median(grpo_timer.wall), statistics.median(online_timer.wall)
    g_cpu, o_cpu = statistics.median(grpo_timer.cpu), statistics.median(online_timer.cpu)
    amortised, amortised_cpu = baseline_s / opts.run_steps, baseline_cpu / opts.run_steps
    result = {
        "settings": {**{k: v for k, v in vars(opts).items() if k != "out"}, "threads": torch.get_num_threads(),
                     "G": 8, "completions_per_step": 64, "max_completion_length": 24, "rewards": specs,
                     "torch": torch.__version__},
        "grpo_step_s": {"wall_median": g_wall, "cpu_median": g_cpu, "wall": grpo_timer.wall, "cpu": grpo_timer.cpu},
        "online_step_s": {"wall_median": o_wall, "cpu_median": o_cpu, "wall": online_timer.wall,
                          "cpu": online_timer.cpu},
        "baseline_s": baseline_s, "baseline_cpu_s": baseline_cpu, "online_constructor_s": construct_s,
        "baseline_per_step_s": amortised, "baseline_cpu_per_step_s": amortised_cpu,
        "ratio_wall": (o_wall + amortised) / g_wall, "ratio_cpu": (o_cpu + amortised_cpu) / g_cpu,
        "ratio_wall_without_baseline": o_wall / g_wall, "ratio_cpu_without_baseline": o_cpu / g_cpu,
    }
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_online_step" + ("" if opts.bank == "rules" else f"_{opts.bank}") + (
        "" if opts.baseline_samples == 8 else f"_b{opts.baseline_samples}")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Online dominance step vs TRL GRPO step (experiments/bench_online_step.py)", "",
        f"Same tiny Llama (hidden {opts.hidden}), {opts.prompts} prompts, G = 8, 64 completions per step, 24 new "
        f"tokens, lr 0, {opts.rounds} interleaved rounds of {opts.steps} steps each, "
        f"{torch.get_num_threads()} thread(s), reward bank `{opts.bank}` ({json.dumps(specs)}). Baseline "
        f"({opts.prompts} prompts x {opts.baseline_samples}) amortised over {opts.run_steps} steps. Command: "
        f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} python experiments/bench_online_step.py "
        f"{' '.join(sys.argv[1:])}`; 1-minute load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at "
        "the end.", "",
        "| | GRPO | online | online + baseline/step | ratio |", "|---|---|---|---|---|",
        f"| wall s/step (median) | {g_wall:.3f} | {o_wall:.3f} | {o_wall + amortised:.3f} | "
        f"{result['ratio_wall']:.3f} |",
        f"| CPU s/step (median) | {g_cpu:.3f} | {o_cpu:.3f} | {o_cpu + amortised_cpu:.3f} | "
        f"{result['ratio_cpu']:.3f} |",
        "", f"Baseline sampling + scoring: {baseline_s:.2f} s wall, {baseline_cpu:.2f} s CPU "
        f"({amortised:.3f} / {amortised_cpu:.3f} s per step amortised).", "",
        "CPU time is the comparison to trust on a shared machine (wall time includes waiting for a core).", "",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
