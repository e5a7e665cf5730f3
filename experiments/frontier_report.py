"""Aggregate the frontier runs (``experiments/results/frontier_runs/<task>/<method>-s<seed>.json``) into
``frontier.json``, ``frontier.md`` and ``frontier.png``. Every number in the Markdown comes from here.

Matched KL: each run gives eps, attribute gains and distinct fraction at its checkpoints; per method the seeds'
values are averaged at each checkpoint step (KL averaged too), giving a curve; eps at a KL level is read off
that curve by linear interpolation in KL (no extrapolation), with the interval half-width interpolated the same
way (mean of the seeds' 1.96 x bootstrap se, divided by sqrt(seeds)) -- reported only where both methods'
curves cover the level.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

HEADLINE = ("md-logistic", "gdpo", "grpo-sum")
#: the multidom variants whose targets are computed: the library default and the quickstart's setting
TARGET_VARIANTS = ("md-logistic", "md-logistic-b4")
PEERS = ("gdpo", "grpo-sum")


def _load(runs: Path) -> dict:
    out: dict = {}
    for f in sorted(runs.glob("*/*.json")):
        r = json.loads(f.read_text())
        if r.get("reference") or not r.get("evals"):
            continue
        out.setdefault(r["task"], {}).setdefault(r["method"], []).append(r)
    return out


def _curve(runs: list) -> list[dict]:
    """Mean over seeds at each checkpoint step present in every finished-to-that-step seed."""
    steps = sorted({e["step"] for r in runs for e in r["evals"]})
    pts = []
    for s in steps:
        rows = [e for r in runs for e in r["evals"] if e["step"] == s]
        n = len(rows)
        attrs = list(rows[0]["attributes"])
        gains = {a: statistics.fmean(e["attributes"][a]["gain"] for e in rows) for a in attrs}
        # se of the seed-mean gain: within-run se's combined (independent seeds), plus spread between seeds
        ses = {a: math.sqrt(sum(e["attributes"][a]["gain_se"] ** 2 for e in rows)) / n for a in attrs}
        pts.append({
            "step": s, "seeds": n,
            "eps": statistics.fmean(e["eps"] for e in rows),
            "eps_half": 1.96 * math.sqrt(sum(e["eps_se"] ** 2 for e in rows)) / n,
            "eps_seeds": [e["eps"] for e in rows],
            "kl": statistics.fmean(e["kl"] for e in rows),
            "kl_seeds": [e["kl"] for e in rows],
            "distinct": statistics.fmean(e["distinct"] for e in rows),
            "empty": statistics.fmean(e.get("empty", 0.0) for e in rows),
            "gain": gains, "gain_se": ses,
            "gain_min_seed": {a: min(e["attributes"][a]["gain"] for e in rows) for a in attrs},
            "worst_z": {a: min(e["attributes"][a]["gain"] / max(e["attributes"][a]["gain_se"], 1e-12)
                               for e in rows) for a in attrs},
            "q10_gain": {a: statistics.fmean(e["attributes"][a]["q10_gain"] for e in rows) for a in attrs},
        })
    return pts


def _interp(curve: list[dict], kl: float, key: str):
    """Value of ``key`` at ``kl`` by linear interpolation along the curve (starting at the reference: KL 0,
    eps 0.5, distinct = reference's); None outside the covered KL range or where KL is not monotone there."""
    pts = sorted(curve, key=lambda p: p["kl"])
    for a, b in zip(pts, pts[1:]):
        if a["kl"] <= kl <= b["kl"]:
            t = 0.0 if b["kl"] == a["kl"] else (kl - a["kl"]) / (b["kl"] - a["kl"])
            return a[key] + t * (b[key] - a[key])
    return None


def _kl_at_eps(curve: list[dict], eps: float):
    """Smallest KL at which the (KL-sorted) curve reaches ``eps`` (interpolated), None if never."""
    pts = sorted(curve, key=lambda p: p["kl"])
    for a, b in zip(pts, pts[1:]):
        if a["eps"] > eps >= b["eps"]:
            t = (a["eps"] - eps) / (a["eps"] - b["eps"])
            return a["kl"] + t * (b["kl"] - a["kl"])
    return pts[0]["kl"] if pts and pts[0]["eps"] <= eps else None


def _distinct_at_eps(curve: list[dict], eps: float):
    """Distinct fraction where the (KL-sorted) curve first reaches ``eps`` (interpolated), None if never."""
    pts = sorted(curve, key=lambda p: p["kl"])
    for a, b in zip(pts, pts[1:]):
        if a["eps"] > eps >= b["eps"]:
            t = (a["eps"] - eps) / (a["eps"] - b["eps"])
            return a["distinct"] + t * (b["distinct"] - a["distinct"])
    return None


def targets(s: dict, md: str = HEADLINE[0]) -> dict:
    """The issue's targets, computed from one task's summary for multidom variant ``md``."""
    out: dict = {}
    if md not in s["curves"]:
        return out
    rows = [r for r in s["matched"].get(md, []) if r["peer"] == "gdpo"]
    verdicts = []
    for r in rows:
        if r["md_eps"] is None:
            continue
        hi_md, lo_p = r["md_eps"] + r["md_half"], r["peer_eps"] - r["peer_half"]
        lo_md, hi_p = r["md_eps"] - r["md_half"], r["peer_eps"] + r["peer_half"]
        verdicts.append("lower" if hi_md < lo_p else ("higher" if lo_md > hi_p else "tie"))
    out["matched_kl_vs_gdpo"] = {"levels": len(verdicts), "lower": verdicts.count("lower"),
                                 "tie": verdicts.count("tie"), "higher": verdicts.count("higher"),
                                 "met": bool(verdicts) and "higher" not in verdicts}
    r = s["reach_gdpo_final"].get(md)
    if r:
        out["kl_to_reach_gdpo_final"] = {**r, "met": r["ratio"] is not None and r["ratio"] <= 0.6}
    bad = []
    for m, curve in s["curves"].items():
        if not m.startswith("md-"):
            continue
        last = max(curve, key=lambda p: p["step"])
        bad += [f"{m}: {a} (worst seed gain/se {z:+.1f})" for a, z in last["worst_z"].items() if z < -1.0]
    out["md_attribute_below_reference"] = {"runs_final_checkpoint": bad, "met": not bad}
    if "grpo-sum" in s["curves"]:
        last = max(s["curves"]["grpo-sum"], key=lambda p: p["step"])
        out["grpo_sum_sacrifices"] = {a: last["gain"][a] for a in last["gain"] if last["gain"][a] < -last["gain_se"][a]}
    if "gdpo" in s["curves"]:
        full = _with_reference(s["curves"][md], s["reference"].get("distinct", float("nan")))
        ratios = []
        for p in s["curves"]["gdpo"]:
            d = _distinct_at_eps(full, p["eps"])
            if d is not None:
                ratios.append({"gdpo_step": p["step"], "eps": p["eps"], "gdpo_distinct": p["distinct"],
                               "md_distinct": d, "ratio": d / max(p["distinct"], 1e-9)})
        out["distinct_at_equal_eps"] = {"rows": ratios, "met": bool(ratios) and all(x["ratio"] >= 2 for x in ratios)}
    return out


def _with_reference(curve: list[dict], ref_distinct: float) -> list[dict]:
    start = {"step": 0, "kl": 0.0, "eps": 0.5, "eps_half": 0.0, "distinct": ref_distinct}
    return [start, *curve]


def summarise(runs: dict, ref: dict) -> dict:
    out: dict = {}
    for task, methods in runs.items():
        curves = {m: _curve(rs) for m, rs in methods.items()}
        timing = {m: {"median_step_wall_s": statistics.fmean(r["median_step_wall_s"] for r in rs if r.get("done")),
                      "median_step_cpu_s": statistics.fmean(r["median_step_cpu_s"] for r in rs if r.get("done"))}
                  for m, rs in methods.items() if any(r.get("done") for r in rs)}
        rd = ref.get(task, {}).get("distinct", float("nan"))
        full = {m: _with_reference(c, rd) for m, c in curves.items()}
        # matched KL levels: the checkpoints' KLs of GDPO (the strongest peer) inside multidom's range
        matched = {}
        for md in [m for m in curves if m.startswith("md-")]:
            rows = []
            for peer in PEERS:
                if peer not in curves:
                    continue
                for p in curves[peer]:
                    e_md = _interp(full[md], p["kl"], "eps")
                    rows.append({"peer": peer, "kl": p["kl"], "peer_step": p["step"], "peer_eps": p["eps"],
                                 "peer_half": p["eps_half"], "peer_distinct": p["distinct"],
                                 "md_eps": e_md, "md_half": _interp(full[md], p["kl"], "eps_half"),
                                 "md_distinct": _interp(full[md], p["kl"], "distinct")})
                for p in curves[md]:  # and the peer's curve read at multidom's checkpoints
                    e_p = _interp(full[peer], p["kl"], "eps")
                    if e_p is None or p["kl"] < min(q["kl"] for q in curves[peer]):
                        continue  # below the peer's first checkpoint: no interpolation from the reference
                    rows.append({"peer": peer, "kl": p["kl"], "peer_step": f"md step {p['step']}", "peer_eps": e_p,
                                 "peer_half": _interp(full[peer], p["kl"], "eps_half"),
                                 "peer_distinct": _interp(full[peer], p["kl"], "distinct"),
                                 "md_eps": p["eps"], "md_half": p["eps_half"], "md_distinct": p["distinct"]})
            matched[md] = rows
        reach = {}
        if "gdpo" in curves:
            final = max(curves["gdpo"], key=lambda p: p["step"])
            best = min(curves["gdpo"], key=lambda p: p["eps"])
            for md in [m for m in curves if m.startswith("md-")]:
                kl = _kl_at_eps(full[md], final["eps"])
                kb = _kl_at_eps(full[md], best["eps"])
                reach[md] = {"gdpo_final_eps": final["eps"], "gdpo_final_kl": final["kl"], "md_kl": kl,
                             "ratio": None if kl is None else kl / final["kl"],
                             "gdpo_best_eps": best["eps"], "gdpo_best_kl": best["kl"], "gdpo_best_step": best["step"],
                             "md_kl_best": kb, "ratio_best": None if kb is None else kb / best["kl"]}
        out[task] = {"curves": curves, "timing": timing, "matched": matched, "reach_gdpo_final": reach,
                     "seeds": {m: sorted(r["seed"] for r in rs) for m, rs in methods.items()},
                     "settings": {m: rs[0]["settings"] for m, rs in methods.items()},
                     "common": next(iter(methods.values()))[0]["common"],
                     "reference": {k: v for k, v in ref.get(task, {}).items()}}
        out[task]["targets"] = {md: targets(out[task], md) for md in TARGET_VARIANTS if md in out[task]["curves"]}
    return out


def _f(x, fmt="{:.3f}"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 9), squeeze=False)
    for j, task in enumerate(tasks):
        ax, bx = axes[0][j], axes[1][j]
        for m, c in sorted(summary[task]["curves"].items()):
            pts = sorted(c, key=lambda p: p["step"])
            kl = [0.0] + [p["kl"] for p in pts]
            eps = [0.5] + [max(p["eps"], 1e-3) for p in pts]
            half = [0.0] + [p["eps_half"] for p in pts]
            style = dict(lw=2.5) if m in HEADLINE else dict(lw=1, alpha=0.7, ls="--")
            line, = ax.plot(kl, eps, marker="o", ms=3, label=f"{m} ({len(summary[task]['seeds'][m])} seeds)", **style)
            if m in HEADLINE:
                ax.fill_between(kl, [max(e - h, 1e-3) for e, h in zip(eps, half)], [e + h for e, h in zip(eps, half)],
                                color=line.get_color(), alpha=0.15)
            bx.plot(kl[1:], [p["distinct"] for p in pts], marker="o", ms=3, color=line.get_color(), label=m, **style)
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 0.6)  # eps below 1e-3 drawn at the floor
        ax.set_xlabel("KL(policy || reference), nats per sequence (held-out)")
        ax.set_ylabel("exact eps(policy ≽ reference); band: 95% (thick lines)")
        ax.set_title(f"{task}: dominance vs KL (checkpoints along training)")
        ax.legend(fontsize=7)
        bx.set_xlabel("KL, nats per sequence")
        bx.set_ylabel("fraction of distinct completions")
        bx.set_title(f"{task}: diversity vs KL")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(summary: dict, meta: dict) -> str:
    lines = ["# Frontier benchmark: eps(policy ≽ reference) vs KL, multidom vs TRL GRPO-sum and GDPO", "",
             f"Produced by `{meta['command']}` from the per-run records in `experiments/results/frontier_runs/` "
             "(each written by one of the commands below, several processes in parallel, each a subset). "
             "Threads per process: 1 (`OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`). Machine: 2 CPU cores shared "
             f"with other engineers' jobs ({meta['load']}), so wall times are inflated; compare CPU times.", "",
             *[f"    {c}" for c in meta["run_commands"]], ""]
    for task, s in summary.items():
        c = s["common"]
        lines += [f"## Task `{task}`", "",
                  f"Same for every method: lr {c['learning_rate']}, KL beta {c['beta']}, G {c['num_generations']}, "
                  f"{c['per_device_train_batch_size']} completions per step, {c['max_completion_length']} new tokens, "
                  f"{c['max_steps']} steps, temperature {c['temperature']}. Reference distinct fraction "
                  f"{_f(s['reference'].get('distinct'))}.", ""]
        corr = s["reference"].get("corr")
        if corr:
            names = list(next(iter(s["curves"].values()))[0]["gain"])
            pairs = [f"{names[i]}/{names[k]} {corr[i][k]:+.2f}" for i in range(len(names))
                     for k in range(i + 1, len(names))]
            lines += ["Attribute correlations under the reference (held-out samples): " + ", ".join(pairs) + ".", ""]
        lines += ["### Checkpoints (mean over seeds)", "",
                  "| method | step | seeds | KL | eps [95%] | distinct | " +
                  " | ".join(f"gain {a} ± se (q10 gain)" for a in next(iter(s["curves"].values()))[0]["gain"]) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(next(iter(s["curves"].values()))[0]["gain"])]
        order = sorted(s["curves"], key=lambda m: (m not in HEADLINE, HEADLINE.index(m) if m in HEADLINE else 0, m))
        for m in order:
            for p in s["curves"][m]:
                g = " | ".join(f"{p['gain'][a]:+.3f} ± {p['gain_se'][a]:.3f} ({p['q10_gain'][a]:+.3f})"
                               for a in p["gain"])
                lines.append(f"| {m} | {p['step']} | {p['seeds']} | {p['kl']:.2f} | {p['eps']:.3f} "
                             f"[{max(0, p['eps'] - p['eps_half']):.3f}, {p['eps'] + p['eps_half']:.3f}] | "
                             f"{p['distinct']:.3f} | {g} |")
        lines += ["", "### Matched KL (multidom's curve interpolated at each peer checkpoint's KL)", "",
                  "| multidom variant | peer | peer step | KL | peer eps [95%] | multidom eps [95%] | verdict | "
                  "distinct peer / multidom |", "|---|---|---|---|---|---|---|---|"]
        for md in order:
            for r in s["matched"].get(md, []):
                if r["md_eps"] is None:
                    verdict, me = "outside multidom's KL range", "-"
                else:
                    lo_md, hi_md = r["md_eps"] - r["md_half"], r["md_eps"] + r["md_half"]
                    lo_p, hi_p = r["peer_eps"] - r["peer_half"], r["peer_eps"] + r["peer_half"]
                    verdict = "lower" if hi_md < lo_p else ("higher" if lo_md > hi_p else "tie (intervals overlap)")
                    me = f"{r['md_eps']:.3f} [{max(0, lo_md):.3f}, {hi_md:.3f}]"
                lines.append(f"| {md} | {r['peer']} | {r['peer_step']} | {r['kl']:.2f} | {r['peer_eps']:.3f} "
                             f"[{max(0, r['peer_eps'] - r['peer_half']):.3f}, {r['peer_eps'] + r['peer_half']:.3f}] | "
                             f"{me} | {verdict} | {r['peer_distinct']:.3f} / {_f(r['md_distinct'])} |")
        if s["reach_gdpo_final"]:
            lines += ["", "### KL needed to reach GDPO's final eps", "",
                      "| multidom variant | GDPO final eps | GDPO final KL | multidom KL at that eps | ratio | "
                      "GDPO lowest eps (step) | its KL | multidom KL at that eps | ratio |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for md in order:
                r = s["reach_gdpo_final"].get(md)
                if r:
                    lines.append(f"| {md} | {r['gdpo_final_eps']:.3f} | {r['gdpo_final_kl']:.2f} | "
                                 f"{_f(r['md_kl'], '{:.2f}')} | {_f(r['ratio'], '{:.2f}')} | "
                                 f"{r['gdpo_best_eps']:.3f} ({r['gdpo_best_step']}) | {r['gdpo_best_kl']:.2f} | "
                                 f"{_f(r['md_kl_best'], '{:.2f}')} | {_f(r['ratio_best'], '{:.2f}')} |")
        for md, t in s.get("targets", {}).items():
            if not t:
                continue
            lines += ["", f"### Targets for `{md}` (computed)", ""]
            m = t.get("matched_kl_vs_gdpo")
            if m:
                lines.append(f"* eps no higher than GDPO at every matched KL (intervals): {m['levels']} levels, "
                             f"{m['lower']} lower, {m['tie']} tie, {m['higher']} higher -> "
                             f"{'met' if m['met'] else 'NOT met'}")
            r = t.get("kl_to_reach_gdpo_final")
            if r:
                lines.append(f"* reaches GDPO's final eps {r['gdpo_final_eps']:.3f} at <= 60% of GDPO's KL "
                             f"{r['gdpo_final_kl']:.2f}: KL {_f(r['md_kl'], '{:.2f}')} (ratio {_f(r['ratio'], '{:.2f}')}) "
                             f"-> {'met' if r['met'] else 'NOT met'}; GDPO's lowest eps {r['gdpo_best_eps']:.3f} "
                             f"(KL {r['gdpo_best_kl']:.2f}): multidom KL {_f(r['md_kl_best'], '{:.2f}')} "
                             f"(ratio {_f(r['ratio_best'], '{:.2f}')})")
            b = t.get("md_attribute_below_reference")
            if b:
                lines.append("* no multidom run ends with an attribute mean below the reference by more than one se: "
                             + ("met" if b["met"] else "NOT met: " + "; ".join(b["runs_final_checkpoint"])))
            if "grpo_sum_sacrifices" in t:
                g = t["grpo_sum_sacrifices"]
                lines.append("* attributes GRPO-sum ends below the reference on (gain < -se): "
                             + (", ".join(f"{a} {v:+.3f}" for a, v in g.items()) or "none"))
            dd = t.get("distinct_at_equal_eps")
            if dd:
                lines.append("* distinct fraction at equal eps, multidom / GDPO (>= 2x): "
                             + (", ".join(f"eps {x['eps']:.3f}: {x['md_distinct']:.3f}/{x['gdpo_distinct']:.3f} = "
                                          f"{x['ratio']:.1f}x" for x in dd["rows"]) or "no common eps")
                             + f" -> {'met' if dd['met'] else 'NOT met'}")
        lines += ["", "### Step cost (median per step, mean over seeds)", "", "| method | wall s | CPU s |",
                  "|---|---|---|"]
        for m in order:
            if m in s["timing"]:
                t = s["timing"][m]
                lines.append(f"| {m} | {t['median_step_wall_s']:.2f} | {t['median_step_cpu_s']:.2f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _references(runs: Path) -> dict:
    """``{task: {"distinct", "corr", ...}}`` from the ``reference.json`` that ``run`` writes next to the records."""
    out = {}
    for f in sorted(runs.glob("*/reference.json")):
        r = json.loads(f.read_text())
        out[r["task"]] = {"distinct": r["distinct"], "corr": r["corr"]}
    return out


#: the commands of the records written before each record carried its own (toy and quickstart seeds 0-1)
_LEGACY_COMMANDS = [
    "OMP_NUM_THREADS=1 python experiments/frontier.py run --task toy --methods md-logistic gdpo grpo-sum md-hinge "
    "md-logistic-group md-hinge-group --seeds 0 1 2 --n-boot 8",
    "OMP_NUM_THREADS=1 python experiments/frontier.py run --task toy --methods md-logistic-refresh md-logistic-buffer "
    "md-logistic-margin md-logistic-pooled md-logistic-sliced md-logistic-m16 md-logistic-m4 md-logistic-g2-group "
    "--seeds 0 --n-boot 8",
    "MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/frontier.py run --task quickstart --methods "
    "md-logistic gdpo grpo-sum --seeds 0 1 --n-boot 10",
    "MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/frontier.py run --task quickstart --methods "
    "md-logistic gdpo --seeds 2 --n-boot 10",
    "MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/frontier.py run --task quickstart --methods "
    "grpo-sum --seeds 2 --n-boot 10",
    "MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/frontier.py run --task quickstart --methods "
    "md-logistic-b4 --seeds 0 1 2 --n-boot 10",
]


def _load_text(runs: dict, legacy: bool) -> str:
    """The 1-minute load average the records saw (start and end of each run), as a range."""
    seen = [x for t in runs.values() for rs in t.values() for r in rs for x in r.get("loadavg", [])]
    parts = [f"1-minute load average {min(seen):.1f}-{max(seen):.1f} at the start/end of the recorded runs"] if seen else []
    if legacy:
        parts.append("10-20 during the earlier runs, which did not record it")
    return "; ".join(parts) or "load not recorded"


def report(args) -> None:
    runs = _load(Path(args.runs))
    summary = summarise(runs, _references(Path(args.runs)))
    recorded = sorted({r["command"] for task in runs.values() for rs in task.values() for r in rs if "command" in r})
    legacy = any("command" not in r for task in runs.values() for rs in task.values() for r in rs)
    meta = {"command": "OMP_NUM_THREADS=1 python experiments/frontier.py report",
            "run_commands": (_LEGACY_COMMANDS if legacy else []) + recorded, "load": _load_text(runs, legacy)}
    out = Path(args.out)
    (out / "frontier.json").write_text(json.dumps({"meta": meta, "tasks": summary}, indent=1) + "\n")
    md = markdown(summary, meta)
    notes = Path(args.out) / "frontier_notes.md"
    if notes.is_file():  # the reading of the numbers, written by hand after looking at them, appended
        md += "\n" + notes.read_text()
    (out / "frontier.md").write_text(md)
    plot(summary, out / "frontier.png")
    print("wrote", out / "frontier.md")
