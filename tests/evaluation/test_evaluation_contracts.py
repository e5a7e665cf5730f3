"""What the evaluation writes and reads, beyond the numbers (found by mutation testing, issue 15): every file the
report names and where, the report's sections and settings, the options that must travel from
``evaluate_completions`` to the analysis (estimators, bootstrap size, level, HTML, training curves), a bank that
is a plain callable, the KL's standard error with one prompt, and the completion and prompt files' errors."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from lm_tiny import PROMPTS, chat, load

from multidom.evaluation import (
    evaluate_completions,
    kl_estimate,
    read_completions,
    read_prompts,
    write_completions,
)
from multidom.evaluation.analysis import eval_specs
from multidom.lm.generation import Sampling, generate

PROMPTS3 = ["p1", "p2", "p3"]
COMPLETIONS = {"ref": [["a b", "b"], ["a b c", "b"], ["c", "a b"]],
               "new": [["a a a", "a b"], ["a a", "a"], ["a a b", "a a a"]]}


def _bank(prompts, completions):
    """A plain callable bank (no ``.score``): count of 'a' and of words per completion."""
    assert len(prompts) == len(completions)
    values = torch.tensor([[c.split().count("a"), len(c.split())] for c in completions], dtype=torch.float64)
    return SimpleNamespace(values=values, names=["a", "words"])


@pytest.fixture()
def report(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    rows = [{"step": s, "loss": 1.0 / s, "rewards/a/mean": 0.5 * s, "dominance/quantile/eps": 0.5 / s} for s in (1, 2)]
    (train / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = evaluate_completions(PROMPTS3, COMPLETIONS, _bank, output_dir=tmp_path / "ev",
                               specs=eval_specs(["quantile", "sliced"]), n_boot=7, level=0.8, html=True,
                               training_metrics=train)
    return out, tmp_path / "ev"


def test_every_file_the_report_names_is_where_it_says(report):
    out, ev = report
    figures = {"quantiles": "figures/quantiles.png", "scatter": "figures/scatter.png",
               "training": "figures/training.png", "eps_quantile": "figures/eps_quantile.png",
               "eps_sliced": "figures/eps_sliced.png"}
    data = json.loads((ev / "report.json").read_text())
    assert data["figures"] == figures and data["completions"] == str(ev / "completions.jsonl")
    for rel in figures.values():
        assert (ev / rel).is_file() and (ev / rel).stat().st_size > 0, rel
    assert out["paths"]["html"] == str(ev / "report.html") and out["report"] == str(ev / "report.md")
    assert {k: out["paths"][f"figure_{k}"] for k in figures} == {k: str(ev / v) for k, v in figures.items()}
    assert read_completions(ev / "completions.jsonl") == (PROMPTS3, COMPLETIONS)


def test_report_sections_and_settings(report):
    out, ev = report
    assert list(out["dominance"]) == ["quantile", "sliced"] and out["attributes"] == ["a", "words"]
    md = (ev / "report.md").read_text()
    for line in ("# multidom evaluation", "2 models (ref, new; reference: ref), 3 prompts x G = 2 completions, "
                 "2 attributes (a, words).", "7 bootstrap replicates over prompts", "80% percentile intervals",
                 "## Rewards per attribute", "| attribute | ref mean ± se | new mean ± se | ref q10 | new q10 |",
                 "## Dominance: quantile estimator", "## Dominance: sliced estimator",
                 "eps(row ≽ column) with 80% interval", "| i | j | eps | se | upper bound | i almost dominates j |",
                 "when eps + z se < eps0 (i almost dominates j).", "## Training", "figures/training.png",
                 "figures/eps_sliced.png", "figures/scatter.png"):
        assert line in md, line
    # the rewards table by hand: ref's 'a' counts (1, 0, 1, 0, 0, 1) -> mean 0.5, q10 0
    assert "| a | 0.500 ± " in md
    html = (ev / "report.html").read_text()
    assert "<td>a</td>" in html and "<td>0.500 ± " in html and "<h2>Training</h2>" in html


def test_kl_standard_error_needs_two_prompts(tiny_lms):
    ref, tok = load(tiny_lms["ref"])
    other, _ = load(tiny_lms["other"])
    gens = generate(other, tok, chat(PROMPTS[:1]), 3, sampling=Sampling(max_new_tokens=4), seed=0)
    kl = kl_estimate(other, ref, gens)
    assert math.isfinite(kl["kl"]) and math.isnan(kl["kl_se"])


def test_prompt_and_completion_files(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(["hi", {"prompt": "there"}]))
    assert read_prompts(tmp_path / "p.json") == ["hi", "there"]
    (tmp_path / "bad.json").write_text(json.dumps(["hi", {"text": "x"}]))
    with pytest.raises(ValueError, match=r"row 2 has no 'prompt' field"):
        read_prompts(tmp_path / "bad.json")
    nested = write_completions(tmp_path / "a" / "b" / "c.jsonl", {"m": [["x", "y"]]}, ["p"])
    assert read_completions(nested) == (["p"], {"m": [["x", "y"]]})
    (tmp_path / "nomodel.jsonl").write_text(json.dumps({"prompt": "p", "completions": ["x"]}) + "\n")
    with pytest.raises(ValueError, match=r"row 1 needs 'model' and 'prompt' fields"):
        read_completions(tmp_path / "nomodel.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"is empty$"):
        read_completions(tmp_path / "empty.jsonl")
