"""The evaluation report: ``report.md`` (+ ``report.html``), PNG figures, ``report.json``; wandb logging.

The document is a list of blocks rendered through one table per format (``_MARKDOWN``,
``_HTML``), so both formats show the same content. Metric names logged to wandb follow STYLE.md
§9 under an ``eval/`` prefix: ``eval/<model>/rewards/<attribute>/<stat>``,
``eval/dominance/<estimator>/eps/<model_i>_vs_<model_j>``, ``eval/<model>/kl``.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from multidom.evaluation.analysis import EvaluationResult
from multidom.evaluation.plots import plot_eps, plot_quantiles, plot_scatter, plot_training

__all__ = ["write_report", "summary_table", "log_to_wandb", "wandb_metrics"]

Block = tuple[str, Any]


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _md_table(content: tuple[Sequence[str], Sequence[Sequence[Any]]]) -> str:
    header, rows = content
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _html_table(content: tuple[Sequence[str], Sequence[Sequence[Any]]]) -> str:
    header, rows = content
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


_MARKDOWN: dict[str, Callable[[Any], str]] = {
    "h1": lambda t: f"# {t}\n",
    "h2": lambda t: f"## {t}\n",
    "p": lambda t: f"{t}\n",
    "table": _md_table,
    "img": lambda c: f"![{c[1]}]({c[0]})\n",
}
_HTML: dict[str, Callable[[Any], str]] = {
    "h1": lambda t: f"<h1>{html.escape(t)}</h1>\n",
    "h2": lambda t: f"<h2>{html.escape(t)}</h2>\n",
    "p": lambda t: f"<p>{html.escape(t)}</p>\n",
    "table": _html_table,
    "img": lambda c: f'<figure><img src="{html.escape(c[0])}" alt="{html.escape(c[1])}">'
                     f"<figcaption>{html.escape(c[1])}</figcaption></figure>\n",
}
_HTML_HEAD = ("<!doctype html><html><head><meta charset='utf-8'><title>multidom evaluation</title><style>"
              "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
              "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}"
              "</style></head><body>\n")


def _render(blocks: Sequence[Block], table: Mapping[str, Callable[[Any], str]]) -> str:
    return "\n".join(table[kind](content) for kind, content in blocks)


def _ci(d: Mapping[str, Any], i: int, j: int) -> str:
    return f"{d['eps'][i][j]:.3f} [{d['low'][i][j]:.3f}, {d['high'][i][j]:.3f}]"


def _blocks(result: EvaluationResult, figures: Mapping[str, str]) -> list[Block]:
    s, models, ref = result.settings, result.models, result.models[0]
    blocks: list[Block] = [
        ("h1", "multidom evaluation"),
        ("p", f"{len(models)} models ({', '.join(models)}; reference: {ref}), {result.n_prompts} prompts x "
              f"G = {result.G} completions, {len(result.attributes)} attributes ({', '.join(result.attributes)}). "
              f"eps(i ≽ j) = D(i, j) / (D(i, j) + D(j, i)): 0 means i dominates j, 1/2 a tie "
              f"(arXiv 2406.06425). Attributes normalised as each estimator's spec says, against the reference; "
              f"{s.get('n_boot')} bootstrap replicates over prompts (joint across models), "
              f"{100 * s.get('level', 0.9):.0f}% percentile intervals."),
    ]
    if any(result.masked.values()) or result.dropped_prompts:
        blocks.append(("p", f"Masked completions (no score): {result.masked}; prompts dropped: {result.dropped_prompts}."))
    header = ["attribute", *[f"{m} mean ± se" for m in models], *[f"{m} q10" for m in models],
              *[f"Δ mean {m} − {ref} (se)" for m in models[1:]]]
    rows = []
    for a in result.attributes:
        st = {m: result.stats[m][a] for m in models}
        rows.append([a, *[f"{st[m]['mean']:.3f} ± {st[m]['se']:.3f}" for m in models],
                     *[st[m]["q10"] for m in models],
                     *[f"{st[m]['delta']:+.3f} ({st[m]['delta_se']:.3f})" for m in models[1:]]])
    blocks += [("h2", "Rewards per attribute"), ("table", (header, rows))]
    for key in ("quantiles", "scatter"):
        if key in figures:
            blocks.append(("img", (figures[key], {"quantiles": "per-attribute quantile curves",
                                                  "scatter": "pairwise scatter of the reward clouds"}[key])))
    for est, d in result.dominance.items():
        a = d["absolute"]
        blocks += [("h2", f"Dominance: {est} estimator"),
                   ("p", f"eps(row ≽ column) with {100 * s.get('level', 0.9):.0f}% interval; spec {d['spec']}."),
                   ("table", (["i \\ j", *models], [[mi, *[_ci(d, i, j) for j in range(len(models))]]
                                                     for i, mi in enumerate(models)]))]
        rows = [[mi, mj, d["eps"][i][j], d["se"][i][j], a["upper"][i][j], bool(a["reject"][i][j])]
                for i, mi in enumerate(models) for j, mj in enumerate(models) if i != j]
        blocks += [("p", f"Absolute test: reject H0 eps(i ≽ j) >= eps0 = {a['eps0']} at alpha = {a['alpha']} "
                         "when eps + z se < eps0 (i almost dominates j)."),
                   ("table", (["i", "j", "eps", "se", "upper bound", "i almost dominates j"], rows))]
        r = d["relative"]
        blocks += [("p", f"Relative test ({r['correction']}, one-versus-all {r['reduction']}): ranking "
                         f"{' > '.join(r['ranking'])}."),
                   ("table", (["model", "one-vs-all eps", "se", "declared better than"],
                              [[m, r["eps"][i], r["se"][i], r["wins"][i]] for i, m in enumerate(models)]))]
        if f"eps_{est}" in figures:
            blocks.append(("img", (figures[f"eps_{est}"], f"eps matrix, {est}")))
    if "training" in figures:
        blocks += [("h2", "Training"), ("img", (figures["training"], "violation ratio and reward means over steps"))]
    if result.kl:
        blocks += [("h2", f"KL to the reference ({ref})"),
                   ("p", "Sequence-level Monte-Carlo estimate on the sampled completions, se over prompts."),
                   ("table", (["model", "KL", "se"], [[m, v["kl"], v["kl_se"]] for m, v in result.kl.items()]))]
        missing = [m for m in models if m not in result.kl]
        if missing:
            blocks.append(("p", f"No KL for {', '.join(missing)}: its tokenizer differs from the reference's."))
    return blocks


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_report(
    result: EvaluationResult,
    rewards: Mapping[str, Any],
    output_dir: str | os.PathLike,
    *,
    html_report: bool = False,
    extra: Mapping[str, Any] | None = None,
    training_rows: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """Write figures, ``report.md``, ``report.json`` (and ``report.html``) under ``output_dir``.

    rewards: ``{model: (B, G, d)}`` raw (un-normalised) rewards for the figures; training_rows: the
    rows of a training run's ``metrics.jsonl`` for the curves over steps (optional). Returns the paths.
    """
    out = Path(output_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    values = {m: np.asarray(r, dtype=float).reshape(-1, len(result.attributes)) for m, r in rewards.items()}
    figures = {
        "quantiles": plot_quantiles(values, result.attributes, out / "figures" / "quantiles.png"),
        "scatter": plot_scatter(values, result.attributes, out / "figures" / "scatter.png"),
    }
    training = plot_training(training_rows, out / "figures" / "training.png") if training_rows else None
    if training is not None:
        figures["training"] = training
    for est, d in result.dominance.items():
        figures[f"eps_{est}"] = plot_eps(d["eps"], result.models, f"eps(i ≽ j), {est}",
                                         out / "figures" / f"eps_{est}.png")
    rel = {k: str(p.relative_to(out)) for k, p in figures.items()}
    blocks = _blocks(result, rel)
    paths = {"markdown": out / "report.md", "json": out / "report.json"}
    paths["markdown"].write_text(_render(blocks, _MARKDOWN))
    payload = {**result.to_dict(), "figures": rel, **(dict(extra) if extra else {})}
    paths["json"].write_text(json.dumps(_clean(payload), indent=2) + "\n")
    if html_report:
        paths["html"] = out / "report.html"
        paths["html"].write_text(_HTML_HEAD + _render(blocks, _HTML) + "</body></html>\n")
    return {**{k: str(v) for k, v in paths.items()}, **{f"figure_{k}": str(p) for k, p in figures.items()}}


def summary_table(result: EvaluationResult, estimator: str | None = None) -> str:
    """A short plain-text table for the terminal: per attribute mean and q10 of every model, the
    eps of each model over the reference with its interval for every estimator (or only
    ``estimator``), and the KL."""
    models, ref = result.models, result.models[0]
    width = max(len(a) for a in result.attributes + ["attribute"])
    lines = [f"{'attribute':<{width}}  " + "  ".join(f"{m[:14]:>14} mean {m[:14]:>14} q10" for m in models)]
    for a in result.attributes:
        lines.append(f"{a:<{width}}  " + "  ".join(
            f"{result.stats[m][a]['mean']:>19.3f} {result.stats[m][a]['q10']:>18.3f}" for m in models))
    level = 100 * result.settings.get("level", 0.9)
    for est in ([estimator] if estimator else list(result.dominance)):  # every estimator unless one is asked for
        d = result.dominance[est]
        for i, m in enumerate(models[1:], start=1):
            lines.append(f"eps({m} ≽ {ref}) [{est}] = {_ci(d, i, 0)} ({level:.0f}% interval)")
        if not d.get("tests_calibrated", True):
            lines.append(f"  [{est}] intervals and tests have no error control with this spec: "
                         + "; ".join(d.get("test_problems", [])))
    for m in models[1:]:
        if m in result.kl:
            lines.append(f"KL({m} || {ref}) = {result.kl[m]['kl']:.4f} ± {result.kl[m]['kl_se']:.4f} nats per completion")
    return "\n".join(lines) + "\n"


def wandb_metrics(result: EvaluationResult) -> dict[str, float]:
    """Flat scalar metrics (names in the module docstring)."""
    metrics: dict[str, float] = {}
    for m in result.models:
        for a in result.attributes:
            for stat in ("mean", "q10", "q50", "q90", "delta"):
                metrics[f"eval/{m}/rewards/{a}/{stat}"] = result.stats[m][a][stat]
        if m in result.kl:
            metrics[f"eval/{m}/kl"] = result.kl[m]["kl"]
    for est, d in result.dominance.items():
        for i, mi in enumerate(result.models):
            for j, mj in enumerate(result.models):
                if i != j:
                    metrics[f"eval/dominance/{est}/eps/{mi}_vs_{mj}"] = d["eps"][i][j]
            metrics[f"eval/dominance/{est}/one_vs_all/{mi}"] = d["relative"]["eps"][i]
    return metrics


def log_to_wandb(
    result: EvaluationResult, paths: Mapping[str, str], output_dir: str | os.PathLike, *,
    project: str = "multidom", run_name: str | None = None,
) -> str | None:
    """Log the metrics, the figures and ``report.json`` (as an artifact) to wandb; offline unless a key
    is configured (:func:`multidom.trainers.tracking.configure_wandb`). Logs into an active run when there is
    one (e.g. at the end of training), else opens and closes its own. Returns the run directory."""
    import wandb

    from multidom.trainers.tracking import configure_wandb

    configure_wandb(output_dir)
    own = wandb.run is None
    run = wandb.init(project=project, name=run_name, dir=str(output_dir), job_type="evaluation",
                     config=_clean(result.settings)) if own else wandb.run
    run.log({**wandb_metrics(result),
             **{f"eval/figures/{k[len('figure_'):]}": wandb.Image(p) for k, p in paths.items()
                if k.startswith("figure_")}})
    attrs = [[m, a, *(result.stats[m][a][k] for k in ("mean", "se", "q10", "q50", "q90", "delta", "delta_se"))]
             for m in result.models for a in result.attributes]
    tables = {"eval/attributes": wandb.Table(
        columns=["model", "attribute", "mean", "se", "q10", "q50", "q90", "delta", "delta_se"], data=attrs)}
    for est, d in result.dominance.items():
        rows = [[mi, mj, d["eps"][i][j], d["se"][i][j], d["low"][i][j], d["high"][i][j], bool(d["absolute"]["reject"][i][j])]
                for i, mi in enumerate(result.models) for j, mj in enumerate(result.models) if i != j]
        tables[f"eval/dominance/{est}/eps_table"] = wandb.Table(
            columns=["i", "j", "eps", "se", "low", "high", "i almost dominates j"], data=rows)
    run.log(tables)
    artifact = wandb.Artifact("evaluation-report", type="evaluation")
    artifact.add_file(paths["json"])
    artifact.add_file(paths["markdown"])
    run.log_artifact(artifact)
    run_dir = str(Path(run.dir).parent)
    if own:
        run.finish()
    return run_dir
