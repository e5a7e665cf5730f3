"""The offline benchmark (issue 14): AOT vs DPO and KTO, the global-batch sort, offline multi-reward vs a weighted sum.

What it reproduces, at the quickstart's scale (the ~0.3M-parameter SFT chat model of ``configs/quickstart.yaml``):
the AOT paper's ordering (arXiv 2406.05882, Table 1: AOT unpaired ≥ DPO ≥ KTO) and its Figure 2 (a larger
sorting batch aligns better), plus multidom's offline multi-reward dominance trainer (DESIGN.md §3.3) against a
weighted-sum baseline. What it does not: any LLM-scale claim (AlpacaEval, Merlinite-7B), the paper's beta (0.01;
here one beta for every method), or its UltraFeedback data.

**Data** (``data``, cached under ``--work``): the SFT model's own samples on every training prompt of the
quickstart split (``K`` candidates per prompt, the quickstart's sampling: temperature 1, 24 new tokens), scored by
the quickstart's offline reward bank (sentiment, non_offensive, relevance, brevity; raw, higher is better), so the
true rewards are known. Prompts with an empty or duplicated candidate are dropped. Attributes are z-scored on the
whole candidate cloud; ``s = sum_k z_k`` is the normalised reward sum. Candidates ``(2j, 2j+1)`` of a prompt form
``K/2`` disjoint pairs. Labels:

* noisy (DPO, KTO, AOT): Bradley–Terry, ``P(a ≻ b) = sigmoid((s_a - s_b) / tau)`` sampled once (``--tau``), so a pair
  whose sums are close is close to a coin flip; the measured share of labels against the sum order is reported;
* weighted-sum baseline: the same pairs, chosen = the larger ``s`` (no noise: it sees the true rewards, as the
  offline dominance trainer sees the true reward vectors of all ``K`` candidates).

**Methods** (:data:`METHODS`), all from the same SFT model, same beta, learning rate (constant), steps and number
of sequences per optimizer step (``--micro`` pairs per micro-batch x ``--accumulation``; KTO gets the same
sequences unpaired, the offline trainer ``K``-sets with the same number of sequences):
``dpo`` (TRL ``DPOTrainer``, sigmoid), ``kto`` (TRL ``KTOTrainer``), ``aot-paired-trl`` / ``aot-unpaired-trl``
(TRL ``DPOTrainer(loss_type="aot" | "aot_unpaired")``: sorted per micro-batch), ``aot-paired-global`` /
``aot-unpaired-global`` (:class:`multidom.trainers.aot.AOTTrainer`, sorted over the global batch),
``md-offline`` (:class:`multidom.trainers.offline.OfflineDominanceTrainer`, its default spec: sinkhorn, logistic
cost, z-scored) and ``wsum-dpo`` (TRL DPO on the sum-ranked pairs).

**Measured** on the quickstart's held-out prompts (never trained on; ``--eval-g`` samples each) at the checkpoints
``--eval-steps`` with :mod:`experiments.frontier`'s evaluator: exact hinge eps(policy ≽ SFT) ± bootstrap se,
per-attribute mean gain ± se and q10 gain, KL per sequence, distinct completions. Matched KL: eps interpolated
along each run's checkpoint curve (step 0 = the SFT model: KL 0, eps 1/2). ``curve`` runs AOT unpaired at
accumulation 1..64 (sort sizes ``micro``..``64 micro``) with the global sort and with TRL's per-micro-batch sort.
``cost`` measures peak RSS increase and step time of multidom's global sort and TRL's aot_unpaired on the same
model and batches, each in its own subprocess (CPU: RSS, not an allocator peak).

Usage (one thread; one training process at a time; every run writes its record as soon as it is evaluated)::

    MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/offline_bench.py data
    MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/offline_bench.py cost
    MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/offline_bench.py run --seeds 0 1 2
    MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/offline_bench.py curve --seeds 0
    OMP_NUM_THREADS=1 python experiments/offline_bench.py report    # records only -> offline.{json,md,png}
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

warnings.filterwarnings("ignore", message="dominance tests are not valid")  # eps_exact's hinge: frontier's choice
warnings.filterwarnings("ignore", category=FutureWarning)

sys.path.insert(0, str(Path(__file__).parent))
from frontier import CheckpointEval, make_evaluator, reference_cloud  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RUNS = RESULTS / "offline_runs"
WORK = "/tmp/offline_bench"

#: method -> (trainer family, options). Families: trl-dpo (TRL DPOTrainer with ``loss_type``), trl-kto,
#: md-aot (multidom AOTTrainer, global sort), md-offline (multidom OfflineDominanceTrainer).
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpo": ("trl-dpo", {"loss_type": "sigmoid", "labels": "noisy"}),
    "kto": ("trl-kto", {"labels": "noisy"}),
    "aot-paired-trl": ("trl-dpo", {"loss_type": "aot", "labels": "noisy"}),
    "aot-unpaired-trl": ("trl-dpo", {"loss_type": "aot_unpaired", "labels": "noisy"}),
    "aot-paired-global": ("md-aot", {"pairing": "paired", "labels": "noisy"}),
    "aot-unpaired-global": ("md-aot", {"pairing": "unpaired", "labels": "noisy"}),
    "md-offline": ("md-offline", {}),
    "wsum-dpo": ("trl-dpo", {"loss_type": "sigmoid", "labels": "sum"}),
}


# ---------------------------------------------------------------------------------------------
# Task and data
# ---------------------------------------------------------------------------------------------


def quickstart(work: Path, eval_g: int):
    """frontier's quickstart task (SFT model, bank, held-out prompts) plus every training prompt of the split."""
    from frontier import _quickstart_task

    task = _quickstart_task(work)
    task.eval_g = eval_g
    return task, task.notes["all_train_prompts"]


def build_data(args) -> dict:
    """Sample, score and label the dataset once (cached as JSON under ``--work``)."""
    path = Path(args.work) / f"data-K{args.k}-tau{args.tau}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from multidom.lm.generation import Sampling, generate
    from multidom.trainers.online_baseline import as_bank
    from reward_models.base import completion_text

    torch.set_num_threads(1)
    task, prompts = quickstart(Path(args.work), args.eval_g)
    model, tok = task.load()
    t0 = time.perf_counter()
    gens = generate(model.eval(), tok, prompts, args.k, sampling=Sampling(max_new_tokens=task.max_new_tokens),
                    batch_size=16, seed=30_000)
    texts = [[completion_text(c) for c in row] for row in gens.completions]
    keep = [i for i, row in enumerate(texts) if all(t.strip() for t in row) and len(set(row)) == len(row)]
    prompts, texts = [prompts[i] for i in keep], [texts[i] for i in keep]
    scorer = as_bank(task.bank())
    flat_p = [p for p in prompts for _ in range(args.k)]
    flat_c = [[{"role": "assistant", "content": t}] for row in texts for t in row]
    raw = scorer(flat_p, flat_c).reshape(len(prompts), args.k, -1)
    ok = torch.isfinite(raw).all(-1).all(-1)
    prompts = [p for p, o in zip(prompts, ok) if o]
    texts = [t for t, o in zip(texts, ok) if o]
    raw = raw[ok]
    flat = raw.reshape(-1, raw.shape[-1])
    z = (raw - flat.mean(0)) / flat.std(0)
    s = z.sum(-1)  # (P, K) normalised reward sum
    rng = torch.Generator().manual_seed(0)
    pairs, flips = [], 0
    for i in range(len(prompts)):
        for j in range(0, args.k - 1, 2):
            a, b = j, j + 1
            p_ab = torch.sigmoid((s[i, a] - s[i, b]) / args.tau)
            noisy_a = bool(torch.rand((), generator=rng) < p_ab)
            sum_a = bool(s[i, a] >= s[i, b])
            flips += noisy_a != sum_a
            pairs.append({"prompt": i, "noisy": [a, b] if noisy_a else [b, a], "sum": [a, b] if sum_a else [b, a]})
    data = {"prompts": prompts, "texts": texts, "rewards": raw.tolist(), "attributes": list(task.attrs),
            "pairs": pairs, "k": args.k, "tau": args.tau,
            "stats": {"prompts_sampled": len(keep) + (len(gens.completions) - len(keep)),
                      "prompts_kept": len(prompts), "pairs": len(pairs), "label_flip_rate": flips / len(pairs),
                      "attribute_mean": flat.mean(0).tolist(), "attribute_std": flat.std(0).tolist(),
                      "attribute_corr": torch.corrcoef(flat.T.double()).tolist(),
                      "label_noise": f"Bradley-Terry: P(a > b) = sigmoid((s_a - s_b) / {args.tau}), s = sum of "
                                     "attributes z-scored on the candidate cloud",
                      "build_s": time.perf_counter() - t0}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


def label_agreement(data: dict) -> dict:
    """Per attribute and label set: the share of pairs whose chosen candidate is better on it (ties left out)."""
    r = data["rewards"]
    out = {}
    for labels in ("noisy", "sum"):
        row = {}
        for j, a in enumerate(data["attributes"]):
            d = [r[p["prompt"]][p[labels][0]][j] - r[p["prompt"]][p[labels][1]][j] for p in data["pairs"]]
            d = [x for x in d if x != 0]
            row[a] = sum(x > 0 for x in d) / max(len(d), 1)
        out[labels] = row
    return out


def datasets_for(data: dict, family: str, labels: str | None, seed: int = 0):
    """The ``datasets.Dataset`` a family trains on (conversational rows).

    The seed reaches the data order: through the Trainer's sampler for the others, through the row order here for
    KTO, whose sampler is sequential (otherwise KTO's seeds would be one run repeated).
    """
    from datasets import Dataset

    msg = lambda t: [{"role": "assistant", "content": t}]  # noqa: E731
    if family == "md-offline":
        return Dataset.from_dict({"prompt": data["prompts"],
                                  "completions": [[msg(t) for t in row] for row in data["texts"]],
                                  "rewards": data["rewards"]})
    rows = [{"prompt": data["prompts"][p["prompt"]], "chosen": msg(data["texts"][p["prompt"]][p[labels][0]]),
             "rejected": msg(data["texts"][p["prompt"]][p[labels][1]])} for p in data["pairs"]]
    random.Random(0).shuffle(rows)
    if family == "trl-kto":
        # unpaired here and shuffled: TRL's own unpairing puts each map batch's chosen rows before its rejected
        # ones, and KTO's sequential sampler would then feed micro-batches of one label only
        rows = [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
                for r in rows for side in ("chosen", "rejected")]
        random.Random(1 + seed).shuffle(rows)
    return Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------------------------


def split(method: str, micro: int, accumulation: int, fast: bool = True) -> tuple[int, int]:
    """(pairs per micro-batch, accumulation) a method runs with.

    TRL's AOT sorts each micro-batch: ``micro`` x ``accumulation`` as asked. Where the split does not change the
    gradient, ``fast`` runs the step in micro-batches of up to 64 pairs (CPU time): DPO's per-pair loss, multidom's
    global-batch trainers (the sort / the violation is over the whole step either way; tests/test_aot_trainer.py
    checks batch 8 x accumulation 1 = batch 4 x accumulation 2), and KTO (whose KL baseline is then estimated on
    the whole step, as TRL recommends large batches for).
    """
    family, opt = METHODS[method]
    if not fast or opt.get("loss_type") in ("aot", "aot_unpaired"):
        return micro, accumulation
    pairs = micro * accumulation
    big = min(pairs, 64)
    return big, pairs // big


def build_trainer(method: str, task, data: dict, a, seed: int, accumulation: int, out: str, callbacks=()):
    family, opt = METHODS[method]
    micro, accumulation = split(method, a.micro, accumulation, fast=a.cmd != "cost")
    model, tok = task.load()
    ref, _ = task.load()
    common = dict(output_dir=out, seed=seed, learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0,
                  max_steps=a.steps, per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
                  logging_steps=10_000, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                  disable_tqdm=True, dataloader_num_workers=0, max_length=96, beta=a.beta)
    train = datasets_for(data, family, opt.get("labels"), seed)
    kw = dict(train_dataset=train, processing_class=tok, callbacks=list(callbacks))
    if family == "trl-dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(loss_type=[opt["loss_type"]], gradient_checkpointing=False, **common)
        return DPOTrainer(model=model, ref_model=ref, args=args, **kw)
    if family == "trl-kto":
        from trl import KTOConfig, KTOTrainer

        common["per_device_train_batch_size"] = 2 * micro  # the same sequences per step, unpaired
        args = KTOConfig(gradient_checkpointing=False, **common)
        return KTOTrainer(model=model, ref_model=ref, args=args, **kw)
    if family == "md-aot":
        from multidom.trainers.aot import AOTConfig, AOTTrainer

        args = AOTConfig(pairing=opt["pairing"], global_batch=opt.get("global_batch", True), **common)
        return AOTTrainer(model, args, ref_model=ref, **kw)
    from multidom.trainers.offline import OfflineDominanceConfig, OfflineDominanceTrainer

    common["per_device_train_batch_size"] = max(1, 2 * micro // data["k"])  # the same sequences per step
    args = OfflineDominanceConfig(attribute_names=data["attributes"], **common)
    return OfflineDominanceTrainer(model, args, ref_model=ref, **kw)


def train_and_eval(a, jobs: list[tuple[str, int, int, str]]) -> None:
    """Run ``(method, seed, accumulation, record name)`` jobs in turn; each writes its record at every checkpoint."""
    from multidom.trainers.online_baseline import as_bank

    torch.set_num_threads(1)
    import datasets

    datasets.disable_progress_bars()
    data = build_data(a)
    work = Path(a.work)
    task, _ = quickstart(work, a.eval_g)
    task.max_new_tokens = int(task.max_new_tokens)
    scorer = as_bank(task.bank())
    ref = reference_cloud(task, work, scorer)
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "reference.json").write_text(json.dumps(
        {"distinct": float(ref["distinct"]), "corr": ref["corr"].tolist(),
         "mean": ref["cloud"].reshape(-1, ref["cloud"].shape[-1]).mean(0).tolist(), "attributes": list(task.attrs),
         "held_out_prompts": len(task.held_out), "eval_g": task.eval_g, "data": data["stats"],
         "k": data["k"], "tau": data["tau"], "label_agreement": label_agreement(data)}, indent=1) + "\n")
    ref_model, tok = task.load()
    ref_model.eval()
    for method, seed, acc, name in jobs:
        dest = runs / f"{name}.json"
        if dest.is_file() and json.loads(dest.read_text()).get("done") and not a.force:
            print("skip (done)", dest, flush=True)
            continue
        family, opt = METHODS[method]
        seqs = 2 * a.micro * acc
        record = {"method": method, "seed": seed, "family": family, "options": opt, "accumulation": acc,
                  "micro_pairs": a.micro, "sequences_per_step": seqs,
                  "ran_as": split(method, a.micro, acc), "steps": a.steps, "lr": a.lr, "beta": a.beta,
                  "sort_size": (a.micro if family == "trl-dpo" else a.micro * acc) if "aot" in method else None,
                  "torch_threads": torch.get_num_threads(), "command": _command(), "loadavg_start": os.getloadavg(),
                  "evals": [], "done": False}
        print(f"[offline] {name}", flush=True)

        def write(row, record=record, dest=dest):
            record["evals"].append(row)
            dest.write_text(json.dumps(record, indent=1) + "\n")

        evaluator = make_evaluator(task, ref_model, tok, scorer, ref["cloud"], a.n_boot, {})
        cb = CheckpointEval([s for s in a.eval_steps if s <= a.steps], evaluator, write)
        t0 = time.perf_counter()
        trainer = build_trainer(method, task, data, a, seed, acc, str(work / name), [cb])
        record["setup_s"] = time.perf_counter() - t0
        trainer.train()
        record["median_step_wall_s"] = statistics.median(cb.wall[1:])
        record["median_step_cpu_s"] = statistics.median(cb.cpu[1:])
        record["train_s"] = sum(cb.wall)
        record["loadavg_end"] = os.getloadavg()
        record["done"] = True
        dest.write_text(json.dumps(record, indent=1) + "\n")


def _command() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("MULTIDOM_CACHE", "OMP_NUM_THREADS") if k in os.environ)
    return f"{env} python experiments/offline_bench.py " + " ".join(sys.argv[1:])


def run(a) -> None:
    jobs = [(m, s, a.accumulation, f"{m}-s{s}") for s in a.seeds for m in a.methods]
    train_and_eval(a, jobs)


def curve(a) -> None:
    """AOT unpaired, global sort vs per-micro-batch sort, at each accumulation (sort size micro x acc)."""
    jobs = []
    for s in a.seeds:
        for acc in a.accumulations:
            for m in ("aot-unpaired-global", "aot-unpaired-trl"):
                if acc == 1 and m == "aot-unpaired-global":
                    continue  # one micro-batch: the two sorts coincide (tests/test_aot_trainer.py)
                if m == "aot-unpaired-trl" and acc > a.trl_max_accumulation:
                    continue  # CPU time: TRL's micro-batches of 8 pairs cannot be merged
                jobs.append((m, s, acc, f"curve-{m}-a{acc}-s{s}"))
    train_and_eval(a, jobs)


# ---------------------------------------------------------------------------------------------
# Memory and step time: one subprocess per method (RSS is per process)
# ---------------------------------------------------------------------------------------------


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def cost_worker(a) -> dict:
    torch.set_num_threads(1)
    data = build_data(a)
    task, _ = quickstart(Path(a.work), a.eval_g)
    method = a.cost_method
    times = []
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, *x, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *x, **k):
            times.append(time.perf_counter() - self.t)

    a.steps = a.cost_steps
    trainer = build_trainer(method, task, data, a, 0, a.accumulation, str(Path(a.work) / f"cost-{method}"), [Timer()])
    rss0 = _rss_kb()
    trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    warm = times[2:]
    return {"method": method, "accumulation": a.accumulation, "micro_pairs": a.micro, "steps": len(times),
            "step_s_median": statistics.median(warm), "step_s_min": min(warm), "peak_rss_increase_mb": peak / 1024}


def cost(a) -> None:
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows = []
    for acc in a.accumulations:
        for method in ("aot-unpaired-trl", "aot-unpaired-global"):
            cmd = [sys.executable, __file__, "cost", "--worker", method, "--accumulation", str(acc),
                   "--cost-steps", str(a.cost_steps), "--micro", str(a.micro), "--work", a.work, "--k", str(a.k),
                   "--tau", str(a.tau)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]))
            print(json.dumps(rows[-1]), flush=True)
    by = {(r["method"], r["accumulation"]): r for r in rows}
    ratios = {}
    for acc in a.accumulations:
        t, g = by[("aot-unpaired-trl", acc)], by[("aot-unpaired-global", acc)]
        ratios[str(acc)] = {"step_time_global_over_trl": g["step_s_median"] / t["step_s_median"],
                            "peak_rss_global_over_trl": g["peak_rss_increase_mb"] / max(t["peak_rss_increase_mb"], 1e-9)}
        print(f"acc {acc:3d} (sort {a.micro * acc:4d} vs {a.micro}): step {g['step_s_median']:.3f}s vs "
              f"{t['step_s_median']:.3f}s (x{ratios[str(acc)]['step_time_global_over_trl']:.2f}); peak RSS "
              f"+{g['peak_rss_increase_mb']:.0f} vs +{t['peak_rss_increase_mb']:.0f} MB", flush=True)
    (runs / "cost.json").write_text(json.dumps({"rows": rows, "ratios": ratios, "command": _command(),
                                                "loadavg": os.getloadavg(), "memory": "process peak RSS (ru_maxrss) "
                                                "minus RSS before training, CPU; no allocator peak here"}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    parsers = {c: sub.add_parser(c) for c in ("data", "run", "curve", "cost", "report")}
    for c in ("data", "run", "curve", "cost"):
        p = parsers[c]
        p.add_argument("--work", default=WORK)
        p.add_argument("--runs", default=str(RUNS))
        p.add_argument("--k", type=int, default=8, help="candidates per training prompt")
        p.add_argument("--tau", type=float, default=1.0, help="Bradley-Terry temperature of the noisy labels")
        p.add_argument("--eval-g", type=int, default=8)
        p.add_argument("--micro", type=int, default=8, help="pairs per micro-batch")
        p.add_argument("--accumulation", type=int, default=8)
        p.add_argument("--steps", type=int, default=60)
        p.add_argument("--eval-steps", type=int, nargs="+", default=[10, 25, 60])
        p.add_argument("--lr", type=float, default=2e-4)
        p.add_argument("--beta", type=float, default=0.1)
        p.add_argument("--n-boot", type=int, default=20)
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
        p.add_argument("--accumulations", type=int, nargs="+", default=[1, 4, 16, 64])
        p.add_argument("--force", action="store_true")
    parsers["curve"].add_argument("--trl-max-accumulation", type=int, default=16)
    parsers["cost"].add_argument("--worker", dest="cost_method", default=None)
    parsers["cost"].add_argument("--cost-steps", type=int, default=12)
    parsers["report"].add_argument("--runs", default=str(RUNS))
    parsers["report"].add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    if a.cmd == "data":
        print(json.dumps(build_data(a)["stats"], indent=1))
    elif a.cmd == "run":
        run(a)
    elif a.cmd == "curve":
        curve(a)
    elif a.cmd == "cost" and a.cost_method:
        print("RESULT " + json.dumps(cost_worker(a)))
    elif a.cmd == "cost":
        cost(a)
    else:
        from offline_bench_report import report

        report(a)


if __name__ == "__main__":
    main()
