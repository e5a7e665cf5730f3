"""Online multi-reward dominance vs TRL GRPO on a task with exactly known rewards (issue 5).

What it runs (same tiny random Llama, prompts, reward bank, KL coefficient, steps, seed):

* ``multidom-{quantile,sliced,sinkhorn}``: :class:`multidom.trainers.online.OnlineDominanceTrainer`;
* ``grpo-sum``: ``trl.GRPOTrainer`` with the three reward functions summed (TRL's default
  ``sum_then_normalize``, ``scale_rewards="group"``);
* ``grpo-gdpo``: ``trl.GRPOTrainer`` with ``multi_objective_aggregation="normalize_then_sum"`` (GDPO);
* ``multidom-sinkhorn-no-share_b``: a control trained without the ``share_b`` attribute (does the
  unseen attribute drop?).

The task (:mod:`multidom.app.toy`): attributes ``share_a``, ``share_b`` (shares of two token
classes) and ``brevity``. Reported on held-out prompts (``samples`` completions each, temperature 1):
each attribute's mean and 10th percentile next to the reference model's, ``eps(policy ≽ reference)``
(sinkhorn, hinge, ``reg=0.05``) with a prompt-bootstrap 95% interval (:func:`multidom.core.stats.bootstrap_eps`),
the sequence-level KL to the reference (Monte Carlo, ``E_pi[log pi - log pi_ref]``), the median step time
and, for multidom, the share of the step spent in the dominance estimator (potentials).

Step cost is measured separately (``timing_lr0``) with ``learning_rate = 0`` so that every method samples
the same policy (a trained policy changes completion lengths, hence generation time): CPU time per step
(the machine this was run on is shared; process CPU time is the comparison that survives the load), for
the tiny model and for a larger one (hidden 256, 4 layers). The dominance step costs the same for both;
its share shrinks as the model grows.

What it does not reproduce: no paper reports this toy task; it checks the method's promise (every
attribute at or above the reference without weights) and its cost, not a published number.

Usage (pinned threads; ~5 CPU-minutes)::

    OMP_NUM_THREADS=1 python experiments/online_vs_grpo.py --out experiments/results
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from multidom.app.toy import build_toy_model, toy_prompts, toy_rewards  # noqa: E402
from multidom.core.stats import bootstrap_eps  # noqa: E402
from multidom.lm.generation import Sampling, encode_prompt, generate  # noqa: E402
from multidom.lm.logprobs import logps_of_pairs  # noqa: E402
from multidom.trainers.online import OnlineDominanceConfig, OnlineDominanceTrainer  # noqa: E402
from multidom.trainers.online_baseline import as_bank  # noqa: E402

ATTRS = ("share_a", "share_b", "brevity")
COMMON = dict(per_device_train_batch_size=64, num_generations=8, max_completion_length=8, learning_rate=1e-2,
              beta=0.04, report_to="none", logging_steps=1, save_strategy="no", use_cpu=True, temperature=1.0)


class StepTimer(TrainerCallback):
    """Wall and process-CPU time of every optimizer step (generation + scoring + loss + update).

    CPU time is the comparison that survives a shared machine (one thread, so it is the step's work).
    """

    def __init__(self):
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._t = self._c = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t, self._c = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)
        self.cpu.append(time.process_time() - self._c)


def _methods(steps: int, seed: int, lr: float | None = None) -> dict:
    common = {**COMMON, **({} if lr is None else {"learning_rate": lr})}

    def multidom(estimator, attrs=ATTRS):
        def build(path, train, out, timer):
            args = OnlineDominanceConfig(output_dir=out, max_steps=steps, seed=seed,
                                         dominance={"estimator": estimator, "options": {"tol": 1e-3}
                                                    if estimator == "sinkhorn" else {}},
                                         baseline_samples=8, plot_steps=0, all_estimators_steps=0, **common)
            return OnlineDominanceTrainer(AutoModelForCausalLM.from_pretrained(path), args,
                                          Dataset.from_dict({"prompt": train}), toy_rewards(attributes=attrs),
                                          processing_class=AutoTokenizer.from_pretrained(path), callbacks=[timer])
        return build

    def grpo(aggregation):
        def build(path, train, out, timer):
            args = GRPOConfig(output_dir=out, max_steps=steps, seed=seed, multi_objective_aggregation=aggregation,
                              **common)
            return GRPOTrainer(AutoModelForCausalLM.from_pretrained(path), toy_rewards(), args=args,
                               train_dataset=Dataset.from_dict({"prompt": train}),
                               processing_class=AutoTokenizer.from_pretrained(path), callbacks=[timer])
        return build

    return {
        "multidom-quantile": multidom("quantile"),
        "multidom-sliced": multidom("sliced"),
        "multidom-sinkhorn": multidom("sinkhorn"),
        "grpo-sum": grpo("sum_then_normalize"),
        "grpo-gdpo": grpo("normalize_then_sum"),
        "multidom-sinkhorn-no-share_b": multidom("sinkhorn", ("share_a", "brevity")),
    }


@torch.no_grad()
def _sample(model, tok, prompts, samples, scorer, seed):
    gens = generate(model, tok, prompts, samples, sampling=Sampling(max_new_tokens=8),
                    batch_size=max(1, 128 // samples), seed=seed)
    flat_p = [p for p in prompts for _ in range(samples)]
    flat_ids = [t.tolist() for row in gens.completion_ids for t in row]
    r = scorer(flat_p, [c for row in gens.completions for c in row], completion_ids=flat_ids)
    return r.reshape(len(prompts), samples, -1), flat_p, flat_ids


def _seq_logp(model, tok, prompts, ids):
    """``log pi(y | x)`` of each sampled completion (multidom's one log-prob helper)."""
    return logps_of_pairs(model, [encode_prompt(tok, p) for p in prompts], [torch.tensor(c) for c in ids])


def evaluate(model, ref, tok, held, samples, scorer, ref_cloud, n_boot):
    pol, flat_p, flat_ids = _sample(model, tok, held, samples, scorer, seed=1234)
    kl = float((_seq_logp(model, tok, flat_p, flat_ids) - _seq_logp(ref, tok, flat_p, flat_ids)).mean())
    boot = bootstrap_eps([ref_cloud, pol], n_boot=n_boot, boot_seed=0, estimator="sinkhorn", cost="hinge",
                         reg=0.05)
    p, r = pol.reshape(-1, 3), ref_cloud.reshape(-1, 3)
    return {
        "eps_vs_reference": float(boot.eps[1, 0]),
        "eps_ci95": [float(boot.low[1, 0]), float(boot.high[1, 0])],
        "kl_to_reference": kl,
        "attributes": {
            a: {"mean": float(p[:, k].mean()), "q10": float(torch.quantile(p[:, k], 0.1)),
                "reference_mean": float(r[:, k].mean()), "reference_q10": float(torch.quantile(r[:, k], 0.1))}
            for k, a in enumerate(ATTRS)
        },
    }


def _plot(summary: dict, timing: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    width = 0.8 / len(ATTRS)
    for k, a in enumerate(ATTRS):
        mean = [summary[m]["mean_gain"][a] for m in names]
        lo = [mean[i] - summary[m]["min_gain"][a] for i, m in enumerate(names)]
        hi = [summary[m]["max_gain"][a] - mean[i] for i, m in enumerate(names)]
        axes[0].bar([i + k * width for i in range(len(names))], mean, width, yerr=[lo, hi], capsize=2, label=a)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_title("held-out mean gain over the reference\n(mean over seeds, bars: min..max)")
    axes[0].legend(fontsize=8)
    for i, m in enumerate(names):
        axes[1].scatter([i] * len(summary[m]["eps"]), summary[m]["eps"], color="tab:purple", s=14)
        for (lo_, hi_) in summary[m]["eps_ci95"]:
            axes[1].plot([i, i], [lo_, hi_], color="tab:purple", alpha=0.3, lw=3)
    axes[1].axhline(0.5, color="k", lw=0.8, ls="--")
    axes[1].set_title("eps(policy ≽ reference) per seed, 95% bootstrap CI")
    for j, (size, rows) in enumerate(timing.items()):
        tn = list(rows)
        axes[2].bar([i + j * 0.4 for i in range(len(tn))], [rows[n]["step_cpu_vs_grpo_sum"] for n in tn], 0.4,
                    label=size)
    if timing:
        axes[2].axhline(1.1, color="r", lw=0.8, ls="--")
        axes[2].set_xticks([i + 0.2 for i in range(len(tn))])
        axes[2].set_xticklabels(tn, rotation=30, ha="right", fontsize=8)
        axes[2].legend(fontsize=8)
    axes[2].set_title("step CPU time / GRPO-sum (lr 0, same policy)")
    for ax in axes[:2]:
        ax.set_xticks([i + (0.27 if ax is axes[0] else 0) for i in range(len(names))])
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def time_methods(path, train, work: Path, args) -> dict:
    """Step cost with ``learning_rate = 0``: every method then samples from the same (reference) policy, so
    completion lengths -- which a trained policy changes, and generation time with them -- are identical and
    the only difference is the reward aggregation. Two interleaved rounds; CPU time per step, median."""
    names = ["grpo-sum", "grpo-gdpo", "multidom-quantile", "multidom-sliced", "multidom-sinkhorn"]
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    dom: dict[str, list[float]] = {n: [] for n in names}
    agg: dict[str, list[float]] = {n: [] for n in names}
    methods = _methods(args.timing_steps, args.seed, lr=0.0)
    for _ in range(2):
        for name in names:
            timer = StepTimer()
            trainer = methods[name](path, train, str(work / f"timing-{name}"), timer)
            trainer.train()
            cpu[name] += timer.cpu[1:]
            wall[name] += timer.times[1:]
            dom[name] += [h["timing/dominance_s"] for h in trainer.state.log_history if "timing/dominance_s" in h][1:]
            agg[name] += [h["timing/dominance_s"] + h["timing/rewards_s"] + h["timing/eps_s"]
                          for h in trainer.state.log_history if "timing/dominance_s" in h][1:]
    base = statistics.median(cpu["grpo-sum"])
    out = {}
    for name in names:
        c = statistics.median(cpu[name])
        out[name] = {"median_step_cpu_s": c, "median_step_wall_s": statistics.median(wall[name]),
                     "step_cpu_vs_grpo_sum": c / base, "steps_measured": len(cpu[name])}
        if dom[name]:
            out[name]["median_dominance_s"] = statistics.median(dom[name])
            out[name]["estimator_share_of_step_wall"] = statistics.median(dom[name]) / statistics.median(wall[name])
            # the whole reward function (bank + gather + normalisation + potentials + logged eps), same process
            out[name]["aggregator_share_of_step_wall"] = statistics.median(agg[name]) / statistics.median(wall[name])
        print("timing", name, json.dumps(out[name]), flush=True)
    return out


def run_seed(seed: int, args, work: Path) -> tuple[dict, Path, list]:
    """Train and evaluate every method for one seed (model init, sampling and data order)."""
    path = build_toy_model(work / f"model-seed{seed}", seed=seed)
    tok = AutoTokenizer.from_pretrained(path)
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    train = toy_prompts(32, seed=1)
    held = [p for p in toy_prompts(40, seed=2) if p not in set(train)][:16]
    scorer = as_bank(toy_rewards())
    ref_cloud, _, _ = _sample(ref, tok, held, args.samples, scorer, seed=99 + seed)
    results: dict = {}
    for name, build in _methods(args.steps, seed).items():
        if args.only and name not in args.only:
            continue
        timer = StepTimer()
        t0 = time.perf_counter()
        trainer = build(path, train, str(work / f"{name}-seed{seed}"), timer)
        setup = time.perf_counter() - t0
        trainer.train()
        rows = [h for h in trainer.state.log_history if "loss" in h]
        entry = {
            "setup_s": setup,
            "median_step_wall_s": statistics.median(timer.times[1:]),  # the first step pays one-off costs
            "median_step_cpu_s": statistics.median(timer.cpu[1:]),
            "train_kl_last": rows[-1].get("kl") if rows else None,
            "eval": evaluate(trainer.model.eval(), ref, tok, held, args.samples, scorer, ref_cloud, args.n_boot),
        }
        dom = [h["timing/dominance_s"] for h in rows if "timing/dominance_s" in h][1:]
        if dom:
            entry["median_dominance_s"] = statistics.median(dom)
            entry["estimator_share_of_step_wall"] = statistics.median(dom) / entry["median_step_wall_s"]
        results[name] = entry
        gains = {a: round(v["mean"] - v["reference_mean"], 3) for a, v in entry["eval"]["attributes"].items()}
        print(f"seed {seed} {name}: gains {gains} eps {entry['eval']['eps_vs_reference']:.3f}", flush=True)
    return results, path, train


def summarise(per_seed: dict) -> dict:
    """Per method, over seeds: eps values and intervals, mean/min/max gain per attribute, KL, and the number of
    seeds where every attribute's held-out mean is at or above the reference's."""
    methods = list(next(iter(per_seed.values())))
    out = {}
    for m in methods:
        runs = [per_seed[s][m]["eval"] for s in per_seed]
        gains = {a: [r["attributes"][a]["mean"] - r["attributes"][a]["reference_mean"] for r in runs] for a in ATTRS}
        q10 = {a: [r["attributes"][a]["q10"] - r["attributes"][a]["reference_q10"] for r in runs] for a in ATTRS}
        out[m] = {
            "eps": [r["eps_vs_reference"] for r in runs],
            "eps_ci95": [r["eps_ci95"] for r in runs],
            "mean_eps": statistics.fmean(r["eps_vs_reference"] for r in runs),
            "mean_kl": statistics.fmean(r["kl_to_reference"] for r in runs),
            "mean_gain": {a: statistics.fmean(g) for a, g in gains.items()},
            "min_gain": {a: min(g) for a, g in gains.items()},
            "max_gain": {a: max(g) for a, g in gains.items()},
            "mean_q10_gain": {a: statistics.fmean(g) for a, g in q10.items()},
            "seeds_all_attributes_at_or_above_reference": sum(
                all(gains[a][i] >= 0 for a in ATTRS) for i in range(len(runs))),
            "seeds": len(runs),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samples", type=int, default=32, help="held-out completions per prompt")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--timing-steps", type=int, default=12, help="steps per method and round at lr 0 (0: skip)")
    ap.add_argument("--only", nargs="*", help="run only these methods")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="online_vs_grpo_"))
    per_seed: dict = {}
    for seed in args.seeds:
        per_seed[seed], path, train = run_seed(seed, args, work)
    args.seed = args.seeds[0]
    timing: dict = {}
    if args.timing_steps:
        for hidden, layers in ((32, 1), (256, 4)):
            sized = path if hidden == 32 else build_toy_model(work / f"model-{hidden}", hidden=hidden, layers=layers,
                                                              seed=args.seed)
            timing[f"hidden{hidden}_layers{layers}"] = time_methods(sized, train, work, args)
    summary = summarise(per_seed)
    meta = {"steps": args.steps, "seeds": args.seeds, "held_out_prompts": 16, "samples": args.samples,
            "train_prompts": 32, "common": COMMON, "torch_threads": torch.get_num_threads(),
            "machine": "shared 2-core CPU (load ~8-9 while this ran); compare CPU times, not wall times",
            "command": "OMP_NUM_THREADS=1 python experiments/online_vs_grpo.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items() if v is not None and k not in ("only", "seed"))}
    stem = "online_vs_grpo" if not args.only else "online_vs_grpo_partial"
    (out / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "timing_lr0": timing, "per_seed": per_seed}, indent=2) + "\n")
    _plot(summary, timing, out / f"{stem}.png")
    print("wrote", out / f"{stem}.json")


if __name__ == "__main__":
    main()
