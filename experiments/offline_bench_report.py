"""Aggregate the offline benchmark's records (``experiments/results/offline_runs/*.json``) into ``offline.json``,
``offline.md``, ``offline.png`` and ``offline_readme.md``. Every number in the Markdown comes from the records.

Per method, the seeds' checkpoints are averaged step by step (:func:`frontier_report._curve`); matched KL reads
eps off that curve by linear interpolation in KL from the SFT point (KL 0, eps 1/2), never extrapolating
(:func:`frontier_report._interp`). Lower eps(policy ≽ SFT) is better (0: the policy dominates SFT on all four
attributes jointly). The batch-size curve uses the final checkpoint of the ``curve-*`` runs plus the main runs at
the default accumulation.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from frontier_report import _curve, _interp, _with_reference

ORDER = ("aot-unpaired-global", "aot-unpaired-trl", "aot-paired-global", "aot-paired-trl", "dpo", "kto",
         "md-offline", "wsum-dpo")


def _load(runs: Path) -> tuple[dict, dict]:
    main, curve = {}, {}
    for f in sorted(runs.glob("*.json")):
        if f.stem in ("reference", "cost"):
            continue
        r = json.loads(f.read_text())
        if not r.get("evals"):
            continue
        if f.stem.startswith("curve-"):
            curve.setdefault((r["method"], r["accumulation"]), []).append(r)
        else:
            main.setdefault(r["method"], []).append(r)
    return main, curve


def _levels(curves: dict, methods) -> list[float]:
    """Three KL levels inside every named method's covered range (a quarter, half, all of the smallest max)."""
    tops = [max(p["kl"] for p in curves[m]) for m in methods if m in curves]
    if len(tops) < 2:
        return []
    top = min(tops)
    return [math.floor(top * f * 1000) / 1000 for f in (0.25, 0.5, 1.0)]  # floor: the top level stays covered


def _matched(curves: dict, methods, ref_distinct: float) -> dict:
    levels = _levels(curves, methods)
    out = {"levels": levels, "eps": {}, "gain": {}}
    for m in methods:
        if m not in curves:
            continue
        c = _with_reference(curves[m], ref_distinct)
        out["eps"][m] = [_interp(c, k, "eps") for k in levels]
        attrs = list(curves[m][0]["gain"])
        gc = [{"kl": 0.0, **{a: 0.0 for a in attrs}}] + [{"kl": p["kl"], **p["gain"]} for p in curves[m]]
        out["gain"][m] = {a: [_interp(gc, k, a) for k in levels] for a in attrs}
    return out


def _final(curve: list[dict]) -> dict:
    return max(curve, key=lambda p: p["step"])


def _order_check(final: dict, names) -> dict:
    """Is the final eps ordered as ``names`` (best = lowest first)? With the seed-level numbers."""
    have = [n for n in names if n in final]
    eps = {n: final[n]["eps"] for n in have}
    pairs = {f"{a} <= {b}": eps[a] <= eps[b] for a, b in zip(have, have[1:])}
    wins = {f"{a} <= {b}": sum(x <= y for x, y in zip(final[a]["eps_seeds"], final[b]["eps_seeds"]))
            for a, b in zip(have, have[1:])}
    return {"eps": eps, "holds": pairs, "seed_wins": wins, "seeds": {n: final[n]["seeds"] for n in have}}


def summarise(runs: Path) -> dict:
    main, curve_runs = _load(runs)
    ref = json.loads((runs / "reference.json").read_text()) if (runs / "reference.json").is_file() else {}
    cost = json.loads((runs / "cost.json").read_text()) if (runs / "cost.json").is_file() else {}
    curves = {m: _curve(rs) for m, rs in main.items()}
    final = {m: _final(c) for m, c in curves.items()}
    ref_distinct = ref.get("distinct", 0.0)
    s: dict = {"reference": ref, "cost": cost, "curves": curves, "final": final,
               "seeds": {m: sorted(r["seed"] for r in rs) for m, rs in main.items()},
               "done": {m: sum(r["done"] for r in rs) for m, rs in main.items()},
               "settings": {k: main[m][0][k] for m in main for k in ("steps", "lr", "beta", "micro_pairs",
                                                                     "accumulation", "sequences_per_step")} if main
               else {},
               "commands": sorted({r.get("command", "") for rs in [*main.values(), *curve_runs.values()] for r in rs}),
               "loadavg": [x for rs in main.values() for r in rs for x in (r.get("loadavg_start"), r.get("loadavg_end"))
                           if x],
               "step_cpu_s": {m: statistics.median(r["median_step_cpu_s"] for r in rs if r["done"])
                              for m, rs in main.items() if any(r["done"] for r in rs)}}
    s["ordering"] = {"aot_unpaired_dpo_kto": _order_check(final, ("aot-unpaired-trl", "dpo", "kto")),
                     "aot_unpaired_global_dpo_kto": _order_check(final, ("aot-unpaired-global", "dpo", "kto")),
                     "global_vs_micro_unpaired": _order_check(final, ("aot-unpaired-global", "aot-unpaired-trl")),
                     "global_vs_micro_paired": _order_check(final, ("aot-paired-global", "aot-paired-trl")),
                     "md_vs_wsum": _order_check(final, ("md-offline", "wsum-dpo"))}
    s["matched"] = {"aot_dpo_kto": _matched(curves, ("aot-unpaired-global", "aot-unpaired-trl", "dpo", "kto"),
                                            ref_distinct),
                    "md_vs_wsum": _matched(curves, ("md-offline", "wsum-dpo"), ref_distinct)}
    # no attribute below SFT: at every checkpoint of every seed, gain + 1.96 se >= 0
    below = {}
    for m, rs in main.items():
        below[m] = [{"seed": r["seed"], "step": e["step"], "attribute": a, "gain": v["gain"], "se": v["gain_se"]}
                    for r in rs for e in r["evals"] for a, v in e["attributes"].items()
                    if v["gain"] + 1.96 * v["gain_se"] < 0]
    s["attributes_below_sft"] = below
    # the batch-size curve (final checkpoint)
    bs: dict = {}
    for (m, acc), rs in curve_runs.items():
        e = [max(r["evals"], key=lambda x: x["step"]) for r in rs]
        bs.setdefault(m, {})[acc] = {"sort_size": rs[0]["sort_size"], "pairs_per_step": rs[0]["micro_pairs"] * acc,
                                     "eps": statistics.fmean(x["eps"] for x in e), "eps_seeds": [x["eps"] for x in e],
                                     "kl": statistics.fmean(x["kl"] for x in e), "seeds": len(e)}
    for m in ("aot-unpaired-global", "aot-unpaired-trl"):
        if m in final and main[m]:
            acc = main[m][0]["accumulation"]
            bs.setdefault(m, {})[acc] = {"sort_size": main[m][0]["sort_size"],
                                         "pairs_per_step": main[m][0]["micro_pairs"] * acc,
                                         "eps": final[m]["eps"], "eps_seeds": final[m]["eps_seeds"],
                                         "kl": final[m]["kl"], "seeds": final[m]["seeds"]}
    if "aot-unpaired-trl" in bs and 1 in bs["aot-unpaired-trl"]:
        bs.setdefault("aot-unpaired-global", {})[1] = bs["aot-unpaired-trl"][1]  # one micro-batch: the same run
    s["batch_curve"] = {m: {str(k): v for k, v in sorted(d.items())} for m, d in bs.items()}
    # the same at matched KL: each (sort, accumulation) arm's checkpoint curve, read at shared KL levels
    arms = {f"{m}@a{acc}": _curve(rs) for (m, acc), rs in curve_runs.items() if len(rs[0]["evals"]) > 1}
    for m in ("aot-unpaired-global", "aot-unpaired-trl"):
        if m in curves and main[m]:
            arms[f"{m}@a{main[m][0]['accumulation']}"] = curves[m]
    s["batch_curve_matched"] = _matched(arms, sorted(arms), ref_distinct) if len(arms) > 1 else {}
    s["batch_curve_matched"].pop("gain", None)
    return s


def _f(x, fmt="{:.3f}"):
    return "—" if x is None else fmt.format(x)


def plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))
    for m in ORDER:
        if m not in s["curves"]:
            continue
        c = [{"kl": 0.0, "eps": 0.5, "eps_half": 0.0}] + s["curves"][m]
        ax[0].errorbar([p["kl"] for p in c], [p["eps"] for p in c], yerr=[p["eps_half"] for p in c], marker="o",
                       ms=3, capsize=2, label=m, ls="--" if m.endswith("-trl") else "-")
    ax[0].set_xscale("symlog", linthresh=1.0)
    ax[0].set(xlabel="KL(policy || SFT) per sequence (nats, symlog)", ylabel="eps(policy ≽ SFT), lower is better",
              title="held-out eps vs KL (checkpoints, mean of seeds)")
    ax[0].legend(fontsize=7)
    for m, d in s["batch_curve"].items():
        xs = sorted(d.values(), key=lambda v: v["pairs_per_step"])
        ax[1].plot([v["pairs_per_step"] for v in xs], [v["eps"] for v in xs], marker="o", alpha=0.5, ls=":",
                   label=f"{m}, last step (sort over {'global batch' if 'global' in m else 'micro-batch'})")
    bm = s.get("batch_curve_matched") or {}
    if bm.get("levels"):
        for m in ("aot-unpaired-global", "aot-unpaired-trl"):
            pts = sorted((int(a.split("@a")[1]) * 8, v[-1]) for a, v in bm["eps"].items()
                         if a.startswith(m + "@") and v[-1] is not None)
            ax[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="s", label=f"{m}, at KL {bm['levels'][-1]:.2f}")
    ax[1].set(xscale="log", xlabel="pairs per optimizer step (micro-batch 8 x accumulation)",
              ylabel="eps(policy ≽ SFT)", title="AOT unpaired: sort size (cf. arXiv 2406.05882 Fig. 2)")
    ax[1].legend(fontsize=7)
    ms = [m for m in ORDER if m in s["final"]]
    attrs = list(s["final"][ms[0]]["gain"]) if ms else []
    w = 0.8 / max(len(ms), 1)
    sd = s["reference"].get("data", {}).get("attribute_std") or [1.0] * len(attrs)
    for i, m in enumerate(ms):
        g = s["final"][m]
        ax[2].bar([j + i * w for j in range(len(attrs))], [g["gain"][a] / sd[k] for k, a in enumerate(attrs)], w,
                  yerr=[1.96 * g["gain_se"][a] / sd[k] for k, a in enumerate(attrs)], label=m, capsize=1)
    ax[2].axhline(0, color="k", lw=0.5)
    ax[2].set_xticks([j + 0.4 - w / 2 for j in range(len(attrs))], attrs)
    ax[2].set(ylabel="mean gain over SFT (SFT candidates' sd)", title="per-attribute gain at the last step")
    ax[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _gains(p: dict) -> str:
    return ", ".join(f"{a} {p['gain'][a]:+.3f}±{1.96 * p['gain_se'][a]:.3f} (q10 {p['q10_gain'][a]:+.3f})"
                     for a in p["gain"])


def _holds(check: dict) -> str:
    if not check["holds"]:
        return "not measured"
    bits = [f"{k.replace('<=', '≤')}: {'yes' if v else 'NO'} (seeds {check['seed_wins'][k]} of "
            f"{min(check['seeds'][n] for n in k.split(' <= '))})" for k, v in check["holds"].items()]
    return "; ".join(bits)


def markdown(s: dict) -> str:
    ref, st, cost = s["reference"], s["settings"], s["cost"]
    data = ref.get("data", {})
    L = ["# The offline benchmark: AOT vs DPO and KTO, the global-batch sort, offline multi-reward vs a weighted sum",
         "", "Written by `experiments/offline_bench.py report` from `experiments/results/offline_runs/*.json` "
         "(issue 14); every number below is read from those records.", "",
         "## How it was run", ""]
    L += ["- `MULTIDOM_CACHE=/tmp/qs_cache OMP_NUM_THREADS=1 python experiments/offline_bench.py data` (the dataset, "
          "cached under /tmp/offline_bench; every later command reads it), then these, in the order cost, run by seed, "
          "curve, the KTO seed-1 rerun (which overlapped the curve's last, stopped arm for some minutes: its step "
          "times are not clean, its eps is unaffected):"]
    L += [f"- `{c}`" for c in s["commands"] if c]
    if cost.get("command"):
        L.append(f"- `{cost['command']}`")
    la = s["loadavg"]
    L += ["- one torch thread per process (`OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`), one training process at a "
          "time, on a 2-core CPU machine shared with two other jobs" +
          (f"; 1-minute load average seen at run starts/ends: {min(x[0] for x in la):.1f}–{max(x[0] for x in la):.1f}"
           if la else "") + ". Step times are CPU-bound and noisy; only their ratios inside one run mean much.",
          f"- data: the quickstart SFT model's own samples on {data.get('prompts_kept')} training prompts "
          f"(K = {ref.get('k')} each, {data.get('pairs')} disjoint pairs), scored by the offline reward bank "
          f"({', '.join(ref.get('attributes', []))}). Noisy labels: {data.get('label_noise')}; "
          f"{_f(data.get('label_flip_rate'))} of them disagree with the normalised-sum order.",
          f"- every method: {st.get('steps')} optimizer steps from the SFT model, lr {st.get('lr')} (constant), "
          f"beta {st.get('beta')}, {st.get('micro_pairs')} pairs per micro-batch x accumulation "
          f"{st.get('accumulation')} = {st.get('sequences_per_step')} sequences per step (KTO: the same sequences "
          "unpaired; md-offline: K-sets with the same number of sequences).",
          f"- held out: {ref.get('held_out_prompts')} prompts x {ref.get('eval_g')} samples per model; exact hinge "
          "eps(policy ≽ SFT) on attributes z-scored on the SFT cloud (0 = the policy dominates SFT on all attributes "
          "jointly, 1/2 = no change; lower is better); ± is 1.96 x the seeds' combined bootstrap se / seeds.", ""]
    L += ["## Equal steps (last checkpoint, mean of seeds)", "",
          "| method | seeds | eps ± | eps per seed | KL nats/seq | distinct | per-attribute gain ±1.96se (q10 gain) |",
          "|---|---|---|---|---|---|---|"]
    for m in ORDER:
        if m in s["final"]:
            p = s["final"][m]
            L.append(f"| {m} | {p['seeds']} | {p['eps']:.3f} ± {p['eps_half']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in p['eps_seeds'])} | {p['kl']:.2f} | {p['distinct']:.3f} | "
                     f"{_gains(p)} |")
    L += ["", f"SFT reference: distinct fraction {_f(ref.get('distinct'))}.", ""]
    sd = data.get("attribute_std")
    if sd and s["final"]:
        attrs = ref.get("attributes", [])
        L += ["Gain at the last step in units of the attribute's standard deviation over the SFT candidates "
              "(which attribute the method moved):", "", "| method | " + " | ".join(attrs) + " |",
              "|---|" + "---|" * len(attrs)]
        for m in ORDER:
            if m in s["final"]:
                L.append(f"| {m} | " + " | ".join(f"{s['final'][m]['gain'][a] / sd[j]:+.2f}"
                                                   for j, a in enumerate(attrs)) + " |")
        L.append("")
    steps = sorted({p["step"] for c in s["curves"].values() for p in c})
    L += ["## Checkpoints (mean of seeds: eps / KL nats per sequence)", "",
          "| method | " + " | ".join(f"step {k}" for k in steps) + " |", "|---|" + "---|" * len(steps)]
    for m in ORDER:
        if m in s["curves"]:
            at = {p["step"]: p for p in s["curves"][m]}
            L.append(f"| {m} | " + " | ".join(f"{at[k]['eps']:.3f} / {at[k]['kl']:.2f}" if k in at else "—"
                                             for k in steps) + " |")
    L += ["", "## Matched KL (eps read off each method's checkpoint curve)", ""]
    for key, title in (("aot_dpo_kto", "AOT / DPO / KTO"), ("md_vs_wsum", "offline dominance vs weighted sum")):
        mt = s["matched"][key]
        if not mt["levels"]:
            continue
        L += [f"**{title}**", "", "| method | " + " | ".join(f"KL {k:.2f}" for k in mt["levels"]) + " |",
              "|---|" + "---|" * len(mt["levels"])]
        for m, row in mt["eps"].items():
            L.append(f"| {m} | " + " | ".join(_f(x) for x in row) + " |")
        L.append("")
    mg = s["matched"]["md_vs_wsum"]
    if mg["levels"]:
        L += ["Per-attribute mean gain at those KL levels:", "",
              "| method | attribute | " + " | ".join(f"KL {k:.2f}" for k in mg["levels"]) + " |",
              "|---|---|" + "---|" * len(mg["levels"])]
        for m, d in mg["gain"].items():
            for a, row in d.items():
                L.append(f"| {m} | {a} | " + " | ".join(_f(x, "{:+.3f}") for x in row) + " |")
        L.append("")
    L += ["## AOT's sort size (the counterpart of the paper's Figure 2)", "",
          "AOT unpaired at micro-batch " + str(st.get("micro_pairs")) + " pairs and accumulation 1..64: the global "
          "sort (multidom) sorts all pairs of the step, TRL's `aot_unpaired` sorts each micro-batch; both see the "
          "same pairs and take the same steps.", "",
          "| pairs per step | global: sort size | global eps (seeds) | KL | micro-batch: sort size | micro-batch eps (seeds) | KL |",
          "|---|---|---|---|---|---|---|"]
    bc = s["batch_curve"]
    g, t = bc.get("aot-unpaired-global", {}), bc.get("aot-unpaired-trl", {})
    for acc in sorted({*g, *t}, key=int):
        a, b = g.get(acc), t.get(acc)
        cell = lambda v: (f"{v['sort_size']} | {v['eps']:.3f} ({', '.join(f'{x:.3f}' for x in v['eps_seeds'])}) | "  # noqa: E731
                          f"{v['kl']:.2f}") if v else "— | — | —"
        L.append(f"| {(a or b)['pairs_per_step']} | {cell(a)} | {cell(b)} |")
    L += ["", "Arms missing here were not run, for CPU time: TRL's per-micro-batch arm beyond accumulation 16 "
          "(`--trl-max-accumulation`), and any arm of a command above that was stopped at the deadline. The row at "
          "one micro-batch is one run (the two sorts coincide there).", ""]
    bm = s.get("batch_curve_matched") or {}
    if bm.get("levels"):
        L += ["The same runs at matched KL (eps read off each arm's checkpoints; `@aN` = accumulation N):", "",
              "| arm | " + " | ".join(f"KL {k:.2f}" for k in bm["levels"]) + " |", "|---|" + "---|" * len(bm["levels"])]
        for arm in sorted(bm["eps"], key=lambda x: (x.split("@")[0], int(x.split("@a")[1]))):
            L.append(f"| {arm} | " + " | ".join(_f(x) for x in bm["eps"][arm]) + " |")
        L.append("")
    if cost.get("rows"):
        L += ["## Memory and step time: multidom's global sort vs TRL `DPOTrainer(loss_type=\"aot_unpaired\")`", "",
              f"Same SFT model and pairs, one subprocess per method (memory: {cost['memory']}).", "",
              "| accumulation | method | median step s | peak RSS increase MB | global / TRL time | global / TRL RSS |",
              "|---|---|---|---|---|---|"]
        for r in cost["rows"]:
            ra = cost["ratios"][str(r["accumulation"])]
            L.append(f"| {r['accumulation']} | {r['method']} | {r['step_s_median']:.3f} | "
                     f"{r['peak_rss_increase_mb']:.1f} | {ra['step_time_global_over_trl']:.2f} | "
                     f"{ra['peak_rss_global_over_trl']:.2f} |")
        L.append("")
    L += ["## Against the targets", ""] + targets_text(s)
    L += ["", "## Why, where it does not hold (read from the same numbers)", ""] + reading(s)
    return "\n".join(L) + "\n"


def collapsed(s: dict) -> dict:
    """Methods whose last checkpoint lost diversity (distinct < 0.8 x SFT's): method -> the numbers that say so."""
    ref_d = s["reference"].get("distinct")
    out = {}
    for m, p in s["final"].items():
        if ref_d and p["distinct"] < 0.8 * ref_d:
            c = s["curves"][m]
            out[m] = (", ".join(f"step {q['step']}: KL {q['kl']:.2f}, eps {q['eps']:.3f}, distinct {q['distinct']:.3f}"
                                for q in c) + f" (SFT distinct {ref_d:.3f})")
    return out


def reading(s: dict) -> list[str]:
    """Data-driven sentences: which attribute moved, how large the seed spread is against the method gaps."""
    f, ref = s["final"], s["reference"]
    sd, attrs = ref.get("data", {}).get("attribute_std"), ref.get("attributes", [])
    L = []
    if not f or not sd:
        return L
    z = {m: {a: f[m]["gain"][a] / sd[j] for j, a in enumerate(attrs)} for m in f}
    top = {m: max(v, key=lambda a: abs(v[a])) for m, v in z.items()}
    common = max(set(top.values()), key=list(top.values()).count)
    others = [abs(v[a]) for m, v in z.items() for a in attrs if a != common]
    L.append(f"- What moved: for {sum(t == common for t in top.values())} of {len(top)} methods the largest gain, in "
             f"SFT standard deviations, is {common} ({min(z[m][common] for m in z):+.2f} to "
             f"{max(z[m][common] for m in z):+.2f} SD); every other attribute moves at most {max(others):.2f} SD.")
    agree = ref.get("label_agreement", {}).get("noisy")
    if agree:
        L.append("  The labels do not ask for that above the rest: the noisy chosen candidate is the better one on "
                 + ", ".join(f"{a} in {v:.3f}" for a, v in agree.items()) + " of the pairs (ties left out). "
                 "Our reading (not measured separately): ending a completion earlier is one token's probability for "
                 "a 2-layer model, while sentiment or relevance need different words, so every method takes the "
                 "cheap direction first, and eps against SFT mostly measures how far each went along it.")
    spread = {m: statistics.stdev(f[m]["eps_seeds"]) for m in f if len(f[m]["eps_seeds"]) > 1}
    if spread:
        means = [f[m]["eps"] for m in f]
        L.append(f"- Noise against signal: the methods' final mean eps span {min(means):.3f}–{max(means):.3f}; the "
                 f"between-seed sd of one method's final eps is {min(spread.values()):.3f}–"
                 f"{max(spread.values()):.3f} and a single evaluation's bootstrap se "
                 f"{min(e for m in f for e in [f[m]['eps_half'] / 1.96 * f[m]['seeds'] ** 0.5]):.3f}–"
                 f"{max(e for m in f for e in [f[m]['eps_half'] / 1.96 * f[m]['seeds'] ** 0.5]):.3f}: an ordering "
                 "whose gaps are below these is not a finding at this size.")
    L.append("- The sort, not the code: multidom's global sort over a step's pairs equals TRL's aot_unpaired with "
             "all those pairs in one micro-batch (loss and gradients, tests/trainers/test_aot_trainer.py), so the "
             "global-vs-micro-batch gap is the sort size's effect. Our reading (not measured separately): a larger sort gives a steadier gradient, which "
             "under Adam at a fixed learning rate moves the policy further per step (the KL columns).")
    for m, why in collapsed(s).items():
        c = s["curves"][m]
        rises = c[-1]["eps"] > min(q["eps"] for q in c)
        L.append(f"- {m} over-optimises: {why}. KL grows while eps against SFT "
                 f"{'rises again' if rises else 'stops falling'}: the outputs narrow instead of improving further; "
                 "the matched-KL tables compare it before that point.")
    kls = {m: f[m]["kl"] for m in f}
    lo, hi = min(kls, key=kls.get), max(kls, key=kls.get)
    L.append(f"- Equal steps are not equal distance: at the last step KL ranges from {kls[lo]:.2f} ({lo}) to "
             f"{kls[hi]:.2f} ({hi}) nats per sequence, so the matched-KL tables are the fairer comparison.")
    d = ref.get("data", {})
    if d:
        L.append(f"- The labels: {d.get('label_flip_rate', 0):.3f} of the noisy pairs disagree with the "
                 "normalised-sum order (Bradley–Terry); DPO, KTO and AOT learn from those labels, the weighted-sum "
                 "baseline and the offline dominance trainer from the true rewards.")
    return L


def _eps_list(check: dict) -> str:
    return ", ".join(f"{m} {e:.3f}" for m, e in check["eps"].items())


def targets_text(s: dict) -> list[str]:
    o, L = s["ordering"], []
    for key, name in (("aot_unpaired_dpo_kto", "TRL's per-micro-batch AOT unpaired"),
                      ("aot_unpaired_global_dpo_kto", "multidom's global-batch AOT unpaired")):
        c = o[key]
        if len(c["eps"]) == 3:
            ok = all(c["holds"].values())
            L.append(f"- **AOT unpaired ≥ DPO ≥ KTO** ({name}; final eps, lower is better: {_eps_list(c)}): "
                     f"{'holds' if ok else 'does not hold'} — {_holds(c)}.")
    mt = s["matched"]["aot_dpo_kto"]
    if mt["levels"]:
        best = []
        for i, k in enumerate(mt["levels"]):
            row = {m: v[i] for m, v in mt["eps"].items() if v[i] is not None}
            if row:
                best.append(f"KL {k:.2f}: " + " < ".join(f"{m} {v:.3f}" for m, v in sorted(row.items(),
                                                                                        key=lambda x: x[1])))
        L.append("  At matched KL (lowest eps first): " + "; ".join(best) + ".")
    for key, name in (("global_vs_micro_unpaired", "unpaired"), ("global_vs_micro_paired", "paired")):
        c = o[key]
        if len(c["eps"]) == 2:
            L.append(f"- **Global sort ≥ per-micro-batch sort** ({name}, same pairs and steps: {_eps_list(c)}): "
                     f"{'holds' if all(c['holds'].values()) else 'does not hold'} — {_holds(c)}.")
    g, t = s["batch_curve"].get("aot-unpaired-global", {}), s["batch_curve"].get("aot-unpaired-trl", {})
    both = [a for a in sorted(g, key=int) if a in t and a != "1"]
    if both:
        wins = sum(g[a]["eps"] <= t[a]["eps"] for a in both)
        mono = all(g[x]["eps"] >= g[y]["eps"] for x, y in zip(sorted(g, key=int), sorted(g, key=int)[1:]))
        L.append(f"- **Batch-size curve**: the global sort has the lower eps at {wins} of {len(both)} accumulation "
                 f"settings (" + ", ".join(f"{g[a]['pairs_per_step']} pairs: {g[a]['eps']:.3f} vs {t[a]['eps']:.3f}"
                                           for a in both) +
                 f"); the global curve is {'monotone non-increasing' if mono else 'not monotone'} in sort size "
                 "(more pairs per step also means more data seen, for both sorts alike).")
    bm = s.get("batch_curve_matched") or {}
    if bm.get("levels"):
        k, e = bm["levels"][-1], {a: v[-1] for a, v in bm["eps"].items() if v[-1] is not None}
        accs = sorted({int(a.split("@a")[1]) for a in e if a.startswith("aot-unpaired-global")})
        pairs = [(n, e[f"aot-unpaired-global@a{n}"], e[f"aot-unpaired-trl@a{n}"]) for n in accs
                 if f"aot-unpaired-trl@a{n}" in e]
        gl = [e[f"aot-unpaired-global@a{n}"] for n in accs]
        tl = [y for _, _, y in pairs]
        L.append(f"  At matched KL {k:.2f}: global sort vs per-micro-batch sort at the same accumulation: " +
                 "; ".join(f"a{n}: {x:.3f} vs {y:.3f}" for n, x, y in pairs) +
                 f" (global lower at {sum(x < y for _, x, y in pairs)} of {len(pairs)}); the global arm's eps "
                 f"{'falls' if all(a > b for a, b in zip(gl, gl[1:])) else 'does not fall'} monotonically with its "
                 f"sort size ({', '.join(f'{v:.3f}' for v in gl)}); the per-micro-batch arm, whose sort stays at "
                 f"8 pairs, {'falls as well' if all(a > b for a, b in zip(tl, tl[1:])) else 'does not fall'} "
                 f"({', '.join(f'{v:.3f}' for v in tl)}): more pairs per step, not the sort, is what helps there.")
    below = s["attributes_below_sft"].get("md-offline")
    if below is not None:
        L.append("- **Offline dominance: no attribute below SFT**: "
                 + ("holds — no checkpoint of any seed has an attribute whose mean gain + 1.96 se < 0."
                    if not below else f"does not hold at {len(below)} (seed, checkpoint, attribute) cells: " +
                    ", ".join(f"seed {b['seed']} step {b['step']} {b['attribute']} {b['gain']:+.3f}±{1.96 * b['se']:.3f}"
                              for b in below[:6]) + "."))
        L.append("  Such cells per method: " + ", ".join(
            f"{m} {len(b)}" + (f" ({', '.join(sorted({x['attribute'] for x in b}))})" if b else "")
            for m, b in sorted(s["attributes_below_sft"].items())) + ".")
    mt = s["matched"]["md_vs_wsum"]
    if mt["levels"] and len(mt["eps"]) == 2:
        md, ws = mt["eps"]["md-offline"], mt["eps"]["wsum-dpo"]
        cmp = [(k, a, b) for k, a, b in zip(mt["levels"], md, ws) if a is not None and b is not None]
        wins = sum(a < b for _, a, b in cmp)
        L.append(f"- **Offline dominance: lower eps than the weighted sum at matched KL**: "
                 f"{'holds' if cmp and wins == len(cmp) else 'does not hold' if wins == 0 else 'holds in part'} — "
                 + "; ".join(f"KL {k:.2f}: md-offline {a:.3f} vs wsum-dpo {b:.3f}" for k, a, b in cmp) + ".")
    c = o["md_vs_wsum"]
    if len(c["eps"]) == 2:
        L.append(f"  At equal steps: {_eps_list(c)} (KL {s['final']['md-offline']['kl']:.2f} vs "
                 f"{s['final']['wsum-dpo']['kl']:.2f}).")
    return L


def readme(s: dict) -> str:
    """The README's offline paragraph (≤ 12 lines), every number from the summary."""
    f, st, ref = s["final"], s["settings"], s["reference"]
    get = lambda m, k="eps", fmt="{:.3f}": fmt.format(f[m][k]) if m in f else "—"  # noqa: E731
    o = s["ordering"]
    order_ok = all(o["aot_unpaired_dpo_kto"]["holds"].values()) and len(o["aot_unpaired_dpo_kto"]["eps"]) == 3
    ma = s["matched"]["aot_dpo_kto"]
    top = (" < ".join(f"{m} {v[-1]:.3f}" for m, v in sorted(ma["eps"].items(), key=lambda x: x[1][-1] or 1)
                      if v[-1] is not None) + f" at KL {ma['levels'][-1]:.2f}") if ma.get("levels") else "not measured"
    mt = s["matched"]["md_vs_wsum"]
    md_ws = [(k, a, b) for k, a, b in zip(mt["levels"], mt["eps"].get("md-offline", []), mt["eps"].get("wsum-dpo", []))
             if a is not None and b is not None]
    below = s["attributes_below_sft"].get("md-offline", [])
    seeds = min((p["seeds"] for p in f.values()), default=0)
    bm = s.get("batch_curve_matched") or {}
    glob = ""
    if bm.get("levels"):
        k = bm["levels"][-1]
        arms = {a: v[-1] for a, v in bm["eps"].items() if v[-1] is not None}
        glob = f"; at KL {k:.2f}: " + ", ".join(f"{a} {v:.3f}" for a, v in sorted(arms.items()))
    verdict = "was measured"
    g, t = f.get("aot-unpaired-global"), f.get("aot-unpaired-trl")
    eg, et = (ma["eps"].get("aot-unpaired-global", [None])[-1], ma["eps"].get("aot-unpaired-trl", [None])[-1]) \
        if ma.get("levels") else (None, None)
    if g and t and eg is not None and et is not None:
        verdict = (("moves faster" if g["kl"] > t["kl"] else "moves no faster") + ", " +
                   ("not better" if eg >= et else "and better at matched KL"))
    gaps = [v[-1] for v in ma.get("eps", {}).values() if v and v[-1] is not None]
    se = max((p["eps_half"] / 1.96 * p["seeds"] ** 0.5 for p in f.values()), default=0.0)
    noise = (f"the largest gap at matched KL ({max(gaps) - min(gaps):.3f}) is "
             f"{'below' if max(gaps) - min(gaps) < se else 'above'} one evaluation's bootstrap se ({se:.3f})"
             if len(gaps) > 1 else "")
    lines = [
        f"**Offline, measured** (`experiments/results/offline.md`: the quickstart SFT model's own samples on "
        f"{ref.get('data', {}).get('prompts_kept')} training prompts, scored by the reward bank, Bradley–Terry label "
        f"noise; {st.get('steps')} steps, {seeds}+ seeds; held-out eps(policy ≽ SFT), lower is better).",
        f"Equal steps: AOT unpaired {get('aot-unpaired-trl')} (TRL, per micro-batch) / {get('aot-unpaired-global')} "
        f"(multidom, global batch), DPO {get('dpo')}, KTO {get('kto')}: the paper's AOT ≥ DPO ≥ KTO "
        f"{'holds' if order_ok else 'does not hold'} here; at matched KL: {top}.",
        f"The global sort {verdict}: at equal steps it reaches KL {get('aot-unpaired-global', 'kl', '{:.1f}')}"
        f" (distinct {get('aot-unpaired-global', 'distinct', '{:.2f}')}) against TRL's "
        f"{get('aot-unpaired-trl', 'kl', '{:.1f}')} ({get('aot-unpaired-trl', 'distinct', '{:.2f}')}){glob}.",
        "Offline multi-reward dominance vs DPO on the normalised reward sum, at matched KL: " +
        ("; ".join(f"{a:.3f} vs {b:.3f} (KL {k:.2f})" for k, a, b in md_ws) if md_ws else "not measured") +
        f"; attributes significantly below SFT: {len(below)} cells" +
        (f"; by the last step it over-optimises (KL {get('md-offline', 'kl', '{:.1f}')}, distinct "
         f"{get('md-offline', 'distinct', '{:.2f}')})." if "md-offline" in collapsed(s) else "."),
    ]
    c = s["cost"].get("ratios", {})
    if c:
        lines.append("Global sort vs TRL's aot_unpaired (CPU; process RSS, not an allocator peak): " + "; ".join(
            f"accumulation {k}: step time x{v['step_time_global_over_trl']:.2f}, peak RSS x"
            f"{v['peak_rss_global_over_trl']:.2f}" for k, v in c.items()) + ".")
    sd, attrs = ref.get("data", {}).get("attribute_std"), ref.get("attributes", [])
    moved = ""
    if sd and f:
        tops = {max(attrs, key=lambda a: abs(p["gain"][a] / sd[attrs.index(a)])) for p in f.values()}
        moved = f"Every method moved {' and '.join(sorted(tops))} most (offline.md); " if len(tops) == 1 else ""
    lines.append(moved + noise + ". A 0.3M-parameter model: no evidence here for or against the paper at LLM scale.")
    return "\n".join(lines) + "\n"


def report(args) -> None:
    runs, out = Path(args.runs), Path(args.out)
    s = summarise(runs)
    (out / "offline.json").write_text(json.dumps(s, indent=1) + "\n")
    (out / "offline.md").write_text(markdown(s))
    (out / "offline_readme.md").write_text(readme(s))
    if s["final"]:
        plot(s, out / "offline.png")
    print(markdown(s))
