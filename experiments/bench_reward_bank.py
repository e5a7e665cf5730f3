"""Throughput of the reward bank on the built-in offline reward models (issue 3, item 5).

Compares, on the same (prompt, completion) pairs from the offline chatterbot English corpus:

* ``one_at_a_time``: each reward model called on one pair per call (what a naive per-sample loop does);
* ``bank``: ``RewardBank`` with batching and a cold cache;
* ``warm_cache``: the same bank called again on the same pairs (every score served from the cache);

for each model alone and for the whole bank (sentiment, non_offensive, relevance, length). Reported:
texts per second (median over ``--repeats``), and the peak resident-memory increase during the run (RSS
sampled every 2 ms, minus the RSS at the start of the run). Threads are pinned to one (OMP and torch).
What it does not measure: GPU throughput, hf_classifier (no offline reward-model checkpoint ships with
the extras), cold model loading (models are loaded before timing; load times are reported separately).

    OMP_NUM_THREADS=1 python experiments/bench_reward_bank.py --n 512 --repeats 3
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

import reward_models as rm  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODELS = ["sentiment", "non_offensive", "relevance", "length"]


def corpus_pairs(n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` (utterance, reply) pairs of chatterbot-corpus's English conversations (sorted files)."""
    import chatterbot_corpus

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    prompts, completions = [], []
    for path in sorted(glob.glob(str(root / "*.yml"))):
        for conv in yaml.safe_load(Path(path).read_text()).get("conversations", []):
            for a, b in zip(conv, conv[1:]):
                prompts.append(str(a))
                completions.append(str(b))
    if len(prompts) < n:
        raise SystemExit(f"the corpus has only {len(prompts)} pairs; use --n <= {len(prompts)}")
    return prompts[:n], completions[:n]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn: Callable[[], object]) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, peak RSS increase in bytes) of one call of ``fn``."""
    start_rss, peak, stop = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    sampler.join()
    return dt, dc, max(peak[0], rss_bytes()) - start_rss


def bench(models: dict, prompts: list[str], completions: list[str], batch_size: int, repeats: int) -> list[dict]:
    n = len(completions)
    rows = []
    groups = {name: [m] for name, m in models.items()}
    groups["bank (all 4)"] = list(models.values())
    for label, group in groups.items():
        def one_at_a_time(group=group) -> None:
            for p, c in zip(prompts, completions):
                for m in group:
                    m([p], [c])

        modes: dict[str, list[tuple[float, float, int]]] = {"one_at_a_time": [], "bank": [], "warm_cache": []}
        for _ in range(repeats):
            modes["one_at_a_time"].append(measure(one_at_a_time))
            bank = rm.RewardBank(group, batch_size=batch_size)
            modes["bank"].append(measure(lambda bank=bank: bank(prompts, completions)))
            modes["warm_cache"].append(measure(lambda bank=bank: bank(prompts, completions)))
        row = {"models": label, "n": n}
        for mode, runs in modes.items():
            secs = statistics.median(t for t, _, _ in runs)
            cpu = statistics.median(c for _, c, _ in runs)
            row[f"{mode}_texts_per_s"] = n / secs
            row[f"{mode}_texts_per_cpu_s"] = n / max(cpu, 1e-9)
            row[f"{mode}_s"] = secs
            row[f"{mode}_cpu_s"] = cpu
            row[f"{mode}_peak_rss_mib"] = max(m for _, _, m in runs) / 2**20
        row["speedup_bank_vs_one"] = row["bank_texts_per_s"] / row["one_at_a_time_texts_per_s"]
        row["speedup_bank_vs_one_cpu"] = row["bank_texts_per_cpu_s"] / row["one_at_a_time_texts_per_cpu_s"]
        row["speedup_warm_vs_bank"] = row["warm_cache_texts_per_s"] / row["bank_texts_per_s"]
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [
        "# Reward-bank throughput (experiments/bench_reward_bank.py)",
        "",
        f"{result['n']} (prompt, completion) pairs from chatterbot-corpus (English), batch size "
        f"{result['batch_size']}, {result['threads']} thread(s), median of {result['repeats']} runs, "
        f"{result['machine']}; load average at start {result['loadavg']} (shared machine: timings are noisy).",
        "Throughput is texts per wall-clock second, and in brackets per CPU second of this process (more robust "
        "when the machine is shared). Peak memory = largest increase of resident memory during a run (sampled "
        "every 2 ms).",
        "",
        "| models | one at a time (texts/s) | bank, cold cache (texts/s) | bank, warm cache (texts/s) "
        "| speed-up bank / one (wall, CPU) | speed-up warm / cold | peak MiB one / bank / warm |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['models']} | {r['one_at_a_time_texts_per_s']:,.0f} ({r['one_at_a_time_texts_per_cpu_s']:,.0f}) | "
            f"{r['bank_texts_per_s']:,.0f} ({r['bank_texts_per_cpu_s']:,.0f}) | "
            f"{r['warm_cache_texts_per_s']:,.0f} ({r['warm_cache_texts_per_cpu_s']:,.0f}) | "
            f"{r['speedup_bank_vs_one']:.1f}x, {r['speedup_bank_vs_one_cpu']:.1f}x | "
            f"{r['speedup_warm_vs_bank']:.0f}x | {r['one_at_a_time_peak_rss_mib']:.1f} / "
            f"{r['bank_peak_rss_mib']:.1f} / {r['warm_cache_peak_rss_mib']:.1f} |"
        )
    lines += ["", "Model load times (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result["load_s"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="number of (prompt, completion) pairs")
    ap.add_argument("--batch-size", type=int, default=64, help="bank batch size")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions per mode (median reported)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_reward_bank", help="output path without suffix")
    args = ap.parse_args()
    torch.set_num_threads(1)
    prompts, completions = corpus_pairs(args.n)
    models, load_s = {}, {}
    for name in MODELS:
        t0 = time.perf_counter()
        models[name] = rm.create(name, device="cpu") if name == "relevance" else rm.create(name)
        load_s[name] = time.perf_counter() - t0
    for m in models.values():  # warm-up (lazy initialisation, first-call allocations)
        m(prompts[:8], completions[:8])
    result = {
        "n": args.n, "batch_size": args.batch_size, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores visible, torch {torch.__version__}",
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()), "load_s": load_s,
        "rows": bench(models, prompts, completions, args.batch_size, args.repeats),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
