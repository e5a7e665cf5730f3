"""The frontier benchmark: eps(policy ≽ reference) against KL, per task and method (issue 10).

The one place where multi-reward methods are compared (it replaces ``online_vs_grpo.py``). Every method
trains from the same reference model on the same training prompts with the same learning rate, KL
coefficient ``beta``, group size ``G``, batch, completion length and number of steps; only the way the
rewards become advantages differs:

* ``grpo-sum``: ``trl.GRPOTrainer`` with one reward function per attribute (higher-is-better),
  ``multi_objective_aggregation="sum_then_normalize"`` (TRL's default), ``scale_rewards="group"``;
* ``gdpo``: the same with ``multi_objective_aggregation="normalize_then_sum"`` (GDPO);
* ``md-*``: :class:`multidom.trainers.online.OnlineDominanceTrainer` (the dominance potentials as the
  one reward) with the levers named in :data:`MULTIDOM` (cost, advantage scale, baseline, grouping,
  estimator, baseline size).

Equal step size: TRL's GRPO variants divide each group's advantages by their std (unit scale per group);
``md-*`` runs with ``scale_rewards="none"`` feed the raw centred potentials ``-(phi - mean phi)`` (their
scale is the cost's slope on z-scored attributes, not 1), those with ``-group`` in the name use the same
per-group std scaling as GRPO, so the step size per group matches GRPO's.

KL levels come from checkpoints along training (evaluated at ``--eval-steps``), so each run gives one curve.
Measured on held-out prompts only (never trained on), ``--eval-g`` completions each, for the policy and
(once per task) the reference, sampled with :func:`multidom.lm.generation.generate`:

* ``eps(policy ≽ reference)`` with the **exact** estimator (POT ``ot.emd``), hinge cost, attributes
  z-scored on the reference cloud, pooled over prompts; interval = eps ± 1.96 bootstrap se (prompt
  bootstrap, :func:`multidom.core.stats.bootstrap_eps`, ``--n-boot`` replicates; the percentile interval
  is not used because the hinge ratio's bootstrap distribution is biased upward, DESIGN.md §8);
* per attribute: mean gain over the reference ± se (prompt-clustered), 10th-percentile gain;
* KL per sequence ``E_pi[log pi(y|x) - log pi_ref(y|x)]`` (:func:`multidom.lm.logprobs.logps_of_pairs`) ± se;
* fraction of distinct completions (texts) among all held-out samples;
* wall and process-CPU time per optimizer step (median; the machine is shared, CPU time is the robust one).

Tasks (:data:`TASKS`):

* ``toy``: exact rewards on :mod:`multidom.app.toy`'s random tiny Llama with a built-in conflict:
  ``count_a`` (class-A tokens / max length: wants long completions of A tokens), ``share_b`` (share of
  class-B tokens among the tokens) and ``brevity``. Under the reference ``count_a`` is anti-correlated
  with both others (length, and A vs B tokens), and the sum ``count_a + share_b + brevity`` is maximised by
  a single B token, i.e. by giving up ``count_a`` entirely.
* ``toy5``: the same model and prompts with five attributes: ``toy``'s three plus ``count_n`` (neutral tokens
  / max length) and ``variety`` (distinct tokens / tokens). The sum is still maximised by one B token (sum
  2.875), which gives up both ``count_a`` and ``count_n``.
* ``quickstart``: the quickstart's SFT chat model (cached, :func:`load_or_train_sft`), its four offline
  reward models (sentiment, non_offensive, relevance, brevity) and its training settings
  (``configs/quickstart.yaml``: lr 5e-4, beta 0.05, G 8, 64 completions per step, 24 new tokens, 150 steps).

Usage (one thread per process; each call appends its runs under ``--runs``, ``report`` aggregates)::

    OMP_NUM_THREADS=1 python experiments/frontier.py run --task toy --methods md-logistic gdpo grpo-sum md-hinge \
        md-logistic-group md-hinge-group --seeds 0 1 2 --n-boot 8
    MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/frontier.py run --task quickstart \
        --methods md-logistic gdpo grpo-sum --seeds 0 1 2 --n-boot 10
    OMP_NUM_THREADS=1 python experiments/frontier.py report   # reads only the records under --runs

A quickstart run is ~150 x 1.7-2.5 CPU-s plus four evaluations (~5-8 CPU-minutes); the toy's ~1 CPU-minute.

What it does not reproduce: no paper reports these tasks; GDPO is TRL's ``normalize_then_sum`` implementation.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RUNS = RESULTS / "frontier_runs"


# ---------------------------------------------------------------------------------------------
# Methods: a table of trainer settings (the same common settings for all; only aggregation differs).
# ---------------------------------------------------------------------------------------------

#: multidom variants: OnlineDominanceConfig overrides (``dominance`` is a DominanceSpec mapping).
MULTIDOM: dict[str, dict[str, Any]] = {
    "md-hinge": {"dominance": {"estimator": "quantile", "cost": "hinge"}},
    "md-hinge-group": {"dominance": {"estimator": "quantile", "cost": "hinge"}, "scale_rewards": "group"},
    "md-logistic": {"dominance": {"estimator": "quantile", "cost": "logistic"}},
    "md-logistic-group": {"dominance": {"estimator": "quantile", "cost": "logistic"}, "scale_rewards": "group"},
    "md-logistic-b4": {"dominance": {"estimator": "quantile", "cost": "logistic"}, "baseline_samples": 4},
    # gain 3: h = log(1 + exp(3t)); one sd past dominance its slope is 0.095x its slope at t = 0 (gain 1: 0.54x),
    # closer to the hinge; unscaled potentials are also 3x larger near t = 0 (larger steps there)
    "md-logistic-g3": {"dominance": {"estimator": "quantile", "cost": "logistic", "cost_gain": 3.0}},
    "md-logistic-g2-group": {"dominance": {"estimator": "quantile", "cost": "logistic", "cost_gain": 2.0},
                             "scale_rewards": "group"},
    "md-logistic-refresh": {"dominance": {"estimator": "quantile", "cost": "logistic"},
                            "scale_rewards": "group", "baseline_refresh_steps": 25},
    "md-logistic-buffer": {"dominance": {"estimator": "quantile", "cost": "logistic"},
                           "scale_rewards": "group", "baseline_source": "buffer"},
    "md-logistic-margin": {"dominance": {"estimator": "quantile", "cost": "logistic", "margin": 0.25},
                           "scale_rewards": "group"},
    "md-logistic-pooled": {"dominance": {"estimator": "quantile", "cost": "logistic"},
                           "scale_rewards": "group", "grouping": "pooled"},
    "md-logistic-sliced": {"dominance": {"estimator": "sliced", "cost": "logistic"}, "scale_rewards": "group"},
    "md-logistic-m16": {"dominance": {"estimator": "quantile", "cost": "logistic"},
                        "scale_rewards": "group", "baseline_samples": 16},
    "md-logistic-m4": {"dominance": {"estimator": "quantile", "cost": "logistic"},
                       "scale_rewards": "group", "baseline_samples": 4},
}
#: TRL peers: multi_objective_aggregation.
TRL_PEERS = {"grpo-sum": "sum_then_normalize", "gdpo": "normalize_then_sum"}


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


@dataclass
class Task:
    """What a method trains on and is judged on."""

    name: str
    attrs: tuple[str, ...]
    load: Callable[[], tuple[Any, Any]]  # fresh (policy model, tokenizer) at the reference weights
    train_prompts: list
    held_out: list
    bank: Callable[[], list]  # reward models for multidom (oriented by the bank)
    common: dict[str, Any]  # GRPOConfig settings shared by every method
    eval_steps: tuple[int, ...]
    eval_g: int
    max_new_tokens: int
    notes: dict[str, Any] = field(default_factory=dict)


def _toy_task(work: Path, five: bool = False) -> Task:
    from multidom.app.toy import _A, _B, VOCAB, build_toy_model, toy_prompts
    from reward_models import create

    max_len = 8
    path = work / "toy-model"
    if not (path / "config.json").is_file():
        build_toy_model(path, seed=0)

    def tokens(ids):
        out = []
        for t in ids:
            if int(t) == 0:
                break
            out.append(int(t))
        return out

    def count_a(prompts, completions, completion_ids=None, **_):
        return [sum(t in _A for t in tokens(ids)) / max_len for ids in completion_ids]

    def share_b(prompts, completions, completion_ids=None, **_):
        return [sum(t in _B for t in ts) / len(ts) if (ts := tokens(ids)) else 0.0 for ids in completion_ids]

    def brevity(prompts, completions, completion_ids=None, **_):
        return [1.0 - len(tokens(ids)) / max_len for ids in completion_ids]

    neutral = {VOCAB.index(f"n{i}") for i in range(10)}

    def count_n(prompts, completions, completion_ids=None, **_):
        return [sum(t in neutral for t in tokens(ids)) / max_len for ids in completion_ids]

    def variety(prompts, completions, completion_ids=None, **_):
        return [len(set(ts)) / len(ts) if (ts := tokens(ids)) else 0.0 for ids in completion_ids]

    fns = {"count_a": count_a, "share_b": share_b, "brevity": brevity}
    if five:
        fns.update(count_n=count_n, variety=variety)

    def load():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)

    train = toy_prompts(32, seed=1)
    held = [p for p in toy_prompts(80, seed=2) if p not in set(train)][:32]
    common = dict(per_device_train_batch_size=64, num_generations=8, max_completion_length=max_len,
                  learning_rate=1e-2, beta=0.04, temperature=1.0, max_steps=60)
    return Task("toy5" if five else "toy", tuple(fns), load, train, held,
                lambda: [create({"type": "callable", "fn": f, "name": n}) for n, f in fns.items()],
                common, (3, 6, 12, 30, 60), 16, max_len)


def _quickstart_task(work: Path) -> Task:
    import random

    import yaml

    from multidom.app.quickstart.config import QuickstartConfig
    from multidom.app.quickstart.data import load_chatterbot_pairs, split_by_prompt
    from multidom.app.quickstart.sft import load_or_train_sft, load_sft

    raw = yaml.safe_load((Path(__file__).parents[1] / "configs" / "quickstart.yaml").read_text())
    raw.pop("trainer", None)
    cfg = QuickstartConfig.from_mapping(raw)
    d = cfg.data
    pairs = load_chatterbot_pairs(d.language, max_prompt_words=d.max_prompt_words,
                                  max_response_words=d.max_response_words)
    train_pairs, held_out = split_by_prompt(pairs, eval_fraction=d.eval_fraction, seed=cfg.seed)
    data_key = {k: getattr(d, k) for k in ("language", "max_prompt_words", "max_response_words", "eval_fraction")}
    sft_dir, _ = load_or_train_sft(train_pairs, model_config=cfg.tiny_lm, sft_config=cfg.sft,
                                   cache_dir=cfg.resolved_cache_dir(), key_parts={"data": data_key}, seed=cfg.seed,
                                   progress=False)
    train = train_all = sorted({p.prompt for p in train_pairs})
    train = sorted(random.Random(cfg.seed).sample(train, d.align_prompts))
    held = sorted(random.Random(1).sample(held_out, min(64, len(held_out))))
    t = cfg.training
    common = dict(per_device_train_batch_size=t["per_device_train_batch_size"], num_generations=t["num_generations"],
                  max_completion_length=t["max_completion_length"], learning_rate=t["learning_rate"], beta=t["beta"],
                  temperature=t["temperature"], max_steps=t["max_steps"])
    rewards = list(cfg.rewards)
    names = tuple(_bank_names(rewards))
    conv = lambda qs: [[{"role": "user", "content": q}] for q in qs]  # noqa: E731
    return Task("quickstart", names, lambda: load_sft(sft_dir), conv(train), conv(held), lambda: list(rewards),
                common, (25, 50, 100, 150), 12, int(t["max_completion_length"]), notes={"sft": str(sft_dir), "all_train_prompts": conv(train_all)})


def _bank_names(rewards: list) -> list[str]:
    from reward_models import RewardBank

    return list(RewardBank(list(rewards)).names)


TASKS: dict[str, Callable[[Path], Task]] = {"toy": _toy_task, "toy5": lambda work: _toy_task(work, five=True),
                                             "quickstart": _quickstart_task}


# ---------------------------------------------------------------------------------------------
# Training with evaluation at checkpoints
# ---------------------------------------------------------------------------------------------


class OrientedRewards:
    """One higher-is-better TRL reward function per attribute of a bank, scoring each batch once.

    TRL calls its reward functions one after the other with the same batch; the first call scores all
    attributes with the bank (raw, oriented: the bank flips lower-is-better models such as brevity), the
    others read the memo. NaN (masked) becomes ``None``, which TRL skips.
    """

    def __init__(self, scorer):
        self.scorer, self._key, self._values = scorer, None, None

    def functions(self) -> list:
        out = []
        for k, name in enumerate(self.scorer.names):
            def fn(prompts, completions, k=k, **kw):
                kw = {c: v for c, v in kw.items() if c not in ("trainer_state", "log_metric", "log_extra",
                                                               "environments")}
                key = json.dumps([prompts, completions], default=str)  # the whole batch: never a stale memo
                if key != self._key:
                    self._values, self._key = self.scorer(prompts, completions, **kw), key
                return [float(v) if math.isfinite(float(v)) else None for v in self._values[:, k]]
            fn.__name__ = name
            out.append(fn)
        return out


class CheckpointEval:
    """A TrainerCallback that times every step and evaluates the policy at ``steps`` (written at once)."""

    def __init__(self, steps, evaluate: Callable[[Any, int], dict], on_result: Callable[[dict], None]):
        self.steps, self.evaluate, self.on_result = set(steps), evaluate, on_result
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._t = self._c = 0.0
        self.model = None

    def on_step_begin(self, args, state, control, **kw):
        self._t, self._c = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, model=None, **kw):
        self.wall.append(time.perf_counter() - self._t)
        self.cpu.append(time.process_time() - self._c)
        if state.global_step in self.steps:
            self.on_result(self.evaluate(model, state.global_step))

    # the TrainerCallback protocol (no import of transformers at module level)
    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def _sample(model, tok, prompts, G, task: Task, scorer, seed: int):
    from multidom.lm.generation import Sampling, generate
    from reward_models.base import completion_text

    gens = generate(model, tok, prompts, G, sampling=Sampling(max_new_tokens=task.max_new_tokens),
                    batch_size=max(1, 128 // G), seed=seed)
    flat_p = [p for p in prompts for _ in range(G)]
    flat_c = [c for row in gens.completions for c in row]
    flat_ids = [t for row in gens.completion_ids for t in row]
    values = scorer(flat_p, flat_c, completion_ids=[t.tolist() for t in flat_ids])
    texts = [completion_text(c) for c in flat_c]
    return values.reshape(len(prompts), G, -1), gens.prompt_ids, flat_ids, texts


def _attr_stats(pol: torch.Tensor, ref: torch.Tensor, attrs) -> dict:
    """Per attribute: mean gain ± se (prompt-clustered: se of the per-prompt mean differences), q10 gain."""
    out = {}
    for k, a in enumerate(attrs):
        p, r = pol[..., k], ref[..., k]
        diff = p.mean(1) - r.mean(1)  # (P,) per-prompt mean differences (same prompts)
        out[a] = {"mean": float(p.mean()), "reference_mean": float(r.mean()), "gain": float(diff.mean()),
                  "gain_se": float(diff.std() / math.sqrt(diff.numel())),
                  "q10_gain": float(torch.quantile(p.reshape(-1), 0.1) - torch.quantile(r.reshape(-1), 0.1))}
    return out


def eps_exact(pol: torch.Tensor, ref: torch.Tensor, n_boot: int) -> dict:
    """Exact hinge eps(policy ≽ reference), z-scored on the reference, with a bootstrap-se interval."""
    from multidom.core.stats import bootstrap_eps

    flat = ref.reshape(-1, ref.shape[-1])
    mu, sd = flat.mean(0), flat.std(0).clamp_min(1e-8)
    z = lambda c: ((c - mu) / sd).double()  # noqa: E731
    boot = bootstrap_eps([z(ref), z(pol)], n_boot=n_boot, boot_seed=0, estimator="exact", cost="hinge",
                         batch_size=n_boot)
    eps = float(boot.eps[1, 0])
    se = float(boot.se[1, 0])
    return {"eps": eps, "eps_se": se, "eps_ci95": [max(0.0, eps - 1.96 * se), eps + 1.96 * se]}


def make_evaluator(task: Task, ref_model, tok, scorer, ref_cloud, n_boot: int, sink: dict):
    from multidom.lm.logprobs import logps_of_pairs

    def evaluate(model, step: int) -> dict:
        was = model.training
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            pol, prompt_ids, ids, texts = _sample(model, tok, task.held_out, task.eval_g, task, scorer, seed=20_000)
            p_ids = [prompt_ids[i // task.eval_g] for i in range(len(ids))]
            lr = logps_of_pairs(model, p_ids, ids) - logps_of_pairs(ref_model, p_ids, ids)
        model.train(was)
        row = {"step": step, "kl": float(lr.mean()), "kl_se": float(lr.std() / math.sqrt(lr.numel())),
               "distinct": len(set(texts)) / len(texts), "empty": sum(not t.strip() for t in texts) / len(texts),
               "attributes": _attr_stats(pol, ref_cloud, task.attrs), **eps_exact(pol, ref_cloud, n_boot),
               "eval_s": time.perf_counter() - t0}
        sink.setdefault("clouds", {})[step] = pol
        print(f"  step {step}: eps {row['eps']:.3f} ± {row['eps_se']:.3f} kl {row['kl']:.2f} "
              f"distinct {row['distinct']:.3f} gains " +
              " ".join(f"{a}={v['gain']:+.3f}" for a, v in row["attributes"].items()), flush=True)
        return row

    return evaluate


def build_trainer(task: Task, method: str, seed: int, out: str, callback):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from multidom.trainers.online import OnlineDominanceConfig, OnlineDominanceTrainer
    from multidom.trainers.online_baseline import as_bank

    common = dict(task.common, output_dir=out, seed=seed, report_to="none", logging_steps=1, save_strategy="no",
                  use_cpu=True, disable_tqdm=True)
    model, tok = task.load()
    data = Dataset.from_dict({"prompt": task.train_prompts})
    if method in TRL_PEERS:
        args = GRPOConfig(multi_objective_aggregation=TRL_PEERS[method], **common)
        funcs = OrientedRewards(as_bank(task.bank())).functions()
        return GRPOTrainer(model, funcs, args=args, train_dataset=data, processing_class=tok, callbacks=[callback])
    args = OnlineDominanceConfig(**common, **MULTIDOM[method], plot_steps=0, all_estimators_steps=0)
    return OnlineDominanceTrainer(model, args, data, task.bank(), processing_class=tok, callbacks=[callback])


def reference_cloud(task: Task, work: Path, scorer) -> dict:
    """The reference's held-out cloud (once per task, cached under ``work``)."""
    path = work / f"{task.name}-reference.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    model, tok = task.load()
    with torch.no_grad():
        cloud, _, _, texts = _sample(model.eval(), tok, task.held_out, task.eval_g, task, scorer, seed=10_000)
    flat = cloud.reshape(-1, cloud.shape[-1])
    out = {"cloud": cloud, "distinct": torch.tensor(len(set(texts)) / len(texts)),
           "corr": torch.corrcoef(flat.T.double())}
    torch.save(out, path)
    return out


def write_reference_record(task: Task, ref: dict, runs: Path) -> None:
    """What the report needs of the reference, next to the run records (the report never reads ``--work``)."""
    (runs / "reference.json").write_text(json.dumps(
        {"task": task.name, "reference": True, "distinct": float(ref["distinct"]), "corr": ref["corr"].tolist(),
         "attributes": list(task.attrs), "held_out_prompts": len(task.held_out), "eval_g": task.eval_g}, indent=1)
        + "\n")


def run(args) -> None:
    from multidom.trainers.online_baseline import as_bank

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    task = TASKS[args.task](work)
    if args.steps:
        task.common["max_steps"] = args.steps
        task.eval_steps = tuple(s for s in task.eval_steps if s <= args.steps) or (args.steps,)
    scorer = as_bank(task.bank())
    ref = reference_cloud(task, work, scorer)
    runs = Path(args.runs) / task.name
    runs.mkdir(parents=True, exist_ok=True)
    write_reference_record(task, ref, runs)
    cache = f"MULTIDOM_CACHE={os.environ['MULTIDOM_CACHE']} " if os.environ.get("MULTIDOM_CACHE") else ""
    command = cache + "OMP_NUM_THREADS=1 python experiments/frontier.py " + " ".join(sys.argv[1:])
    ref_model, tok = task.load()
    ref_model.eval()
    for seed in args.seeds:
        for method in args.methods:
            dest = runs / f"{method}-s{seed}.json"
            if dest.is_file() and not args.force:
                print("skip (done)", dest, flush=True)
                continue
            print(f"[{task.name}] {method} seed {seed}", flush=True)
            record = {"task": task.name, "method": method, "seed": seed, "command": command, "common": task.common,
                      "settings": MULTIDOM.get(method, {"multi_objective_aggregation": TRL_PEERS.get(method)}),
                      "torch_threads": torch.get_num_threads(), "evals": [], "done": False,
                      "loadavg_start": os.getloadavg()[0]}
            sink: dict = {}

            def write(row, record=record, dest=dest):
                record["evals"].append(row)
                dest.write_text(json.dumps(record, indent=1) + "\n")

            evaluator = make_evaluator(task, ref_model, tok, scorer, ref["cloud"], args.n_boot, sink)
            cb = CheckpointEval(task.eval_steps, evaluator, write)
            t0 = time.perf_counter()
            trainer = build_trainer(task, method, seed, str(work / f"{task.name}-{method}-s{seed}"), cb)
            record["setup_s"] = time.perf_counter() - t0
            trainer.train()
            record["median_step_wall_s"] = statistics.median(cb.wall[1:])
            record["median_step_cpu_s"] = statistics.median(cb.cpu[1:])
            record["train_s"] = sum(cb.wall)
            record["done"] = True
            record["loadavg"] = [record["loadavg_start"], os.getloadavg()[0]]
            dest.write_text(json.dumps(record, indent=1) + "\n")
            torch.save({k: v for k, v in sink.get("clouds", {}).items()}, work / f"{task.name}-{method}-s{seed}.pt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and evaluate methods x seeds on one task")
    r.add_argument("--task", choices=list(TASKS), required=True)
    r.add_argument("--methods", nargs="+", required=True, choices=[*TRL_PEERS, *MULTIDOM])
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--steps", type=int, default=0, help="override the task's steps (smoke tests)")
    r.add_argument("--n-boot", type=int, default=20)
    r.add_argument("--runs", default=str(RUNS))
    r.add_argument("--work", default="/tmp/frontier_work")
    r.add_argument("--force", action="store_true")
    p = sub.add_parser("report", help="aggregate the runs into frontier.{json,md,png}")
    p.add_argument("--runs", default=str(RUNS))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--work", default="/tmp/frontier_work")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args)
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from frontier_report import report

        report(args)


if __name__ == "__main__":
    main()
