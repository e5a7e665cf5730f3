"""multidom.evaluation: hand-derived eps/statistics, masks, completion files, generation + KL, report files.

The tiny language models of these tests (``tiny_lms``, tests/conftest.py) are random 1-layer Llamas with a
word-level tokenizer and a chat template, saved to a tmp dir and loaded back like a user's model.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from lm_tiny import PROMPTS, chat, load

from multidom.core.spec import DominanceSpec
from multidom.evaluation import (
    EVAL_SPECS,
    evaluate,
    evaluate_completions,
    evaluate_models,
    kl_estimate,
    read_completions,
    read_prompts,
    score,
    summary_table,
    write_completions,
    write_report,
)
from multidom.lm.generation import Sampling, generate


def specs(*estimators: str, normalisation: str = "zscore", cost: str = "hinge") -> list[DominanceSpec]:
    """Hinge by default: the hand-derived numbers below are hinge violations (evaluation's own default is the
    logistic cost, whose tests hold their level; see test_default_specs_are_calibrated_and_hinge_is_flagged)."""
    return [EVAL_SPECS[e].replace(normalisation=normalisation, cost=cost) for e in estimators]

# ------------------------------------------------------------------------------ hand-derived numbers
# Reference cloud {0, 1, 2, 3}, other {1, 2, 2, 2} (B = 2 prompts x G = 2, d = 1), hinge cost h(t) = max(t, 0).
# Sorted pairs (p_(i), q_(i)) = (1,0) (2,1) (2,2) (2,3):
#   D(other ≽ ref) = mean h(q - p) = (0 + 0 + 0 + 1) / 4 = 1/4
#   D(ref ≽ other) = mean h(p - q) = (1 + 1 + 0 + 0) / 4 = 1/2
#   eps(other ≽ ref) = (1/4) / (1/4 + 1/2) = 1/3.
# The z-score (one increasing affine map per attribute) leaves it unchanged: hinge is positively homogeneous
# and shifts cancel in q - p.
REF = torch.tensor([[[0.0], [1.0]], [[2.0], [3.0]]])
OTHER = torch.tensor([[[1.0], [2.0]], [[2.0], [2.0]]])


@pytest.mark.parametrize("normalisation", ["none", "zscore", "cdf"])
def test_eps_matrix_hand_derived(normalisation):
    # the mid-rank CDF of the reference {0, 1, 2, 3} maps 1 -> 3/8, 2 -> 5/8: other {3/8, 5/8, 5/8, 5/8},
    # ref {1/8, 3/8, 5/8, 7/8}; sorted pairs give D(other ≽ ref) = (1/4) / 4, D(ref ≽ other) = (1/4 + 1/4) / 4:
    # eps = 1/3 again (any increasing map of the attribute keeps the 1-D order)
    res = evaluate({"ref": REF, "other": OTHER}, ["x"], specs=specs("quantile", normalisation=normalisation),
                   n_boot=20)
    eps = res.dominance["quantile"]["eps"]
    assert eps[1][0] == pytest.approx(1 / 3, abs=1e-6)
    assert eps[0][1] == pytest.approx(2 / 3, abs=1e-6)
    assert eps[0][0] == eps[1][1] == 0.5
    assert res.dominance["quantile"]["relative"]["ranking"] == ["other", "ref"]


def test_attribute_stats_hand_derived():
    res = evaluate({"ref": REF, "other": OTHER}, ["x"], specs=specs("quantile"), n_boot=50)
    st = res.stats["other"]["x"]
    assert st["mean"] == pytest.approx(7 / 4)
    assert st["q10"] == pytest.approx(1.3)  # linear interpolation: 1 + 0.3 * (2 - 1)
    assert st["q50"] == pytest.approx(2.0)
    assert st["delta"] == pytest.approx(7 / 4 - 6 / 4)
    assert res.stats["ref"]["x"]["delta"] == 0.0 and res.stats["ref"]["x"]["delta_se"] == 0.0
    # prompt-bootstrap se of the mean: per-prompt means are 1.5 and 2 -> se > 0 and below the range
    assert 0.0 < st["se"] < 0.5


def test_masked_completions_leave_the_clouds():
    nan = float("nan")
    ref = torch.tensor([[[0.0], [1.0], [nan]], [[2.0], [3.0], [nan]]])
    other = torch.tensor([[[1.0], [nan], [2.0]], [[2.0], [2.0], [nan]]])
    res = evaluate({"ref": ref, "other": other}, ["x"], specs=specs("quantile", normalisation="none"), n_boot=20)
    assert res.dominance["quantile"]["eps"][1][0] == pytest.approx(1 / 3, abs=1e-6)
    assert res.masked == {"ref": 2, "other": 2} and res.dropped_prompts == 0
    assert res.stats["other"]["x"]["n"] == 4


def test_prompt_without_valid_completion_is_dropped_for_all_models():
    nan = float("nan")
    ref = torch.cat([REF, torch.tensor([[[5.0], [5.0]]])])
    other = torch.cat([OTHER, torch.tensor([[[nan], [nan]]])])
    res = evaluate({"ref": ref, "other": other}, ["x"], specs=specs("quantile", normalisation="none"), n_boot=20)
    assert res.dropped_prompts == 1
    assert res.dominance["quantile"]["eps"][1][0] == pytest.approx(1 / 3, abs=1e-6)


def test_dominating_model_passes_the_absolute_test():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(30, 4, 2, generator=g)
    res = evaluate({"ref": ref, "up": ref + 2.0}, ["a", "b"], specs=specs("quantile", "sinkhorn"), n_boot=50)
    for est in ("quantile", "sinkhorn"):
        d = res.dominance[est]
        assert d["eps"][1][0] < 0.05 and d["absolute"]["reject"][1][0] and not d["absolute"]["reject"][0][1]
        assert d["low"][1][0] <= d["eps"][1][0] + 1e-9 <= d["high"][1][0] + 2e-9
        assert d["relative"]["ranking"] == ["up", "ref"]


def test_three_models_are_ranked_and_tested_pairwise():
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(30, 4, 2, generator=g)
    res = evaluate({"ref": ref, "mid": ref + 1.0, "top": ref + 2.0}, ["a", "b"], specs=specs("quantile"), n_boot=50)
    d = res.dominance["quantile"]
    assert d["relative"]["ranking"] == ["top", "mid", "ref"] and d["relative"]["wins"] == [0, 1, 2]
    eps = torch.tensor(d["eps"])
    assert torch.allclose(eps + eps.T, torch.ones(3, 3, dtype=eps.dtype), atol=1e-6)
    # a shift by +1 on every attribute: each better model dominates each worse one exactly (eps = 0)
    assert eps[1, 0] < 1e-6 and eps[2, 0] < 1e-6 and eps[2, 1] < 1e-6
    assert d["absolute"]["reject"][2][1] and not d["absolute"]["reject"][1][2]


def test_evaluate_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 models"):
        evaluate({"ref": REF}, ["x"])
    with pytest.raises(ValueError, match="same shape"):
        evaluate({"ref": REF, "other": OTHER[:1]}, ["x"])
    with pytest.raises(ValueError, match="attribute names"):
        evaluate({"ref": REF, "other": OTHER}, ["x", "y"])
    with pytest.raises(ValueError, match="unknown normalisation"):
        evaluate({"ref": REF, "other": OTHER}, ["x"], specs=[DominanceSpec(normalisation="minmax")])
    with pytest.raises(ValueError, match="each estimator at most once"):
        evaluate({"ref": REF, "other": OTHER}, ["x"], specs=specs("quantile", "quantile"))


# ------------------------------------------------------------------------------ files
def test_completions_round_trip_and_errors(tmp_path):
    comps = {"a": [["x", "y"], ["z", "w"]], "b": [["1", "2"], ["3", "4"]]}
    path = write_completions(tmp_path / "c.jsonl", comps, ["p1", "p2"])
    prompts, back = read_completions(path)
    assert prompts == ["p1", "p2"] and back == comps
    single = tmp_path / "single.jsonl"
    single.write_text("\n".join(json.dumps({"model": m, "prompt": p, "completion": c})
                                for m, p, c in [("a", "p", "1"), ("a", "p", "2"), ("b", "p", "3")]))
    with pytest.raises(ValueError, match="same number of completions"):
        read_completions(single)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"model": "a", "prompt": "p", "completions": ["x"]}) + "\n"
                   + json.dumps({"model": "b", "prompt": "q", "completions": ["y"]}) + "\n")
    with pytest.raises(ValueError, match="same prompts"):
        read_completions(bad)
    with pytest.raises(FileNotFoundError):
        read_completions(tmp_path / "missing.jsonl")


def test_read_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("a\n\n b \n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert read_prompts(tmp_path / "p.txt") == ["a", "b"] == read_prompts(tmp_path / "p.jsonl")
    (tmp_path / "q.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(ValueError, match="no 'prompt' field"):
        read_prompts(tmp_path / "q.jsonl")


def test_score_with_a_real_bank():
    from reward_models import RewardBank

    bank = RewardBank(["length", "brevity"])
    values, names = score(bank, ["p", "q"], [["one two", "one"], ["a b c", ""]])
    assert names == ["length", "brevity"]
    assert values.shape == (2, 2, 2)
    assert values[..., 0].tolist() == [[2.0, 1.0], [3.0, 0.0]]
    assert values[..., 1].tolist() == [[-2.0, -1.0], [-3.0, -0.0]]  # brevity is lower-is-better: flipped


def test_report_files_and_numbers(tmp_path):
    res = evaluate({"ref": REF.expand(2, 2, 2).clone(), "other": OTHER.expand(2, 2, 2).clone()}, ["x", "y"],
                   specs=specs("quantile"), n_boot=20)
    paths = write_report(res, {"ref": REF.expand(2, 2, 2), "other": OTHER.expand(2, 2, 2)}, tmp_path, html_report=True)
    for key in ("markdown", "json", "html", "figure_quantiles", "figure_scatter", "figure_eps_quantile"):
        assert Path(paths[key]).is_file() and Path(paths[key]).stat().st_size > 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["dominance"]["quantile"]["eps"][1][0] == pytest.approx(1 / 3, abs=1e-6)
    md = (tmp_path / "report.md").read_text()
    assert "figures/quantiles.png" in md and "| other | 0.333" in md
    assert "eps(other ≽ ref) [quantile] = 0.333" in summary_table(res)


# ------------------------------------------------------------------------------ KL
def test_kl_estimate(tiny_lms):
    ref, tok = load(tiny_lms["ref"])
    other, _ = load(tiny_lms["other"])
    gens = generate(other, tok, chat(PROMPTS), 4, sampling=Sampling(max_new_tokens=5), seed=0)
    assert kl_estimate(ref, ref, gens)["kl"] == 0.0
    kl = kl_estimate(other, ref, gens)
    assert math.isfinite(kl["kl"]) and kl["kl_se"] > 0


def test_evaluate_models_end_to_end(tiny_lms, tmp_path):
    from reward_models import RewardBank

    models = {name: load(p) for name, p in tiny_lms.items()}
    bank = RewardBank(["length", {"type": "regex", "pattern": "good|great|nice|happy", "name": "positive"}])
    out = evaluate_models(models, PROMPTS, bank, G=3, specs=specs("quantile"), eps0=0.4, alpha=0.05,
                          output_dir=tmp_path, seed=0, n_boot=20, sampling=Sampling(max_new_tokens=6), progress=False)
    assert out["models"] == ["ref", "other"] and out["attributes"] == ["length", "positive"]
    assert out["kl"]["ref"]["kl"] == 0.0 and math.isfinite(out["kl"]["other"]["kl"])
    eps = out["dominance"]["quantile"]["eps"]
    assert all(math.isfinite(x) for row in eps for x in row) and eps[0][1] + eps[1][0] == pytest.approx(1.0)
    prompts, comps = read_completions(tmp_path / "completions.jsonl")
    assert prompts == PROMPTS and list(comps) == ["ref", "other"] and len(comps["ref"][0]) == 3
    again = evaluate_completions(prompts, comps, bank, output_dir=tmp_path / "again", specs=specs("quantile"),
                                 n_boot=20)
    assert again["dominance"]["quantile"]["eps"] == eps  # scoring the saved file gives the same numbers


def test_kl_estimate_matches_the_exact_one_token_kl(tiny_lms):
    """With one new token, KL(pi || ref) = sum_v p(v) log p(v)/q(v) at the prompt's last position is exact;
    the Monte-Carlo estimate on G samples must fall within 4 of its own exact standard errors."""
    model, tok = load(tiny_lms["other"])
    ref, _ = load(tiny_lms["ref"])
    with torch.no_grad():  # sharpen the policy's next-token distribution: a KL far from 0
        model.lm_head.weight.mul_(40.0)
    G = 400
    gens = generate(model, tok, chat(PROMPTS[:2]), G, sampling=Sampling(max_new_tokens=1), seed=0)
    exact, var = [], []
    with torch.no_grad():
        for ids in gens.prompt_ids:
            logp = torch.log_softmax(model(ids[None]).logits[0, -1].double(), -1)
            logq = torch.log_softmax(ref(ids[None]).logits[0, -1].double(), -1)
            ratio = logp - logq
            kl = float((logp.exp() * ratio).sum())
            exact.append(kl)
            var.append(float((logp.exp() * (ratio - kl) ** 2).sum()))
    expected = sum(exact) / 2
    se = math.sqrt(sum(v / G for v in var)) / 2  # se of the mean of the two per-prompt means
    got = kl_estimate(model, ref, gens)["kl"]
    assert expected > 0.5 and abs(got - expected) < 4 * se, (got, expected, se)
    assert se < 0.1 * expected  # the check has teeth


def test_attribute_se_matches_the_cluster_formula():
    """Prompt-bootstrap se of a mean -> sd(per-prompt means, ddof=0) / sqrt(B) (equal G per prompt)."""
    from multidom.evaluation import attribute_stats

    g = torch.Generator().manual_seed(1)
    r = torch.randn(40, 5, 1, generator=g) + torch.randn(40, 1, 1, generator=g)  # prompt effects: clustered
    out = attribute_stats({"a": r, "b": r + 1.0}, ["x"], n_boot=4000, seed=0)
    per_prompt = r.mean(1).squeeze(-1).double()
    formula = float(per_prompt.std(unbiased=False) / math.sqrt(40))
    assert out["a"]["x"]["se"] == pytest.approx(formula, rel=0.06)
    assert out["b"]["x"]["delta"] == pytest.approx(1.0) and out["b"]["x"]["delta_se"] < 1e-6  # paired: no spread


def test_default_specs_are_calibrated_and_hinge_is_flagged():
    from multidom.core import stats

    assert all(spec.cost == "logistic" and not any(stats.spec_problems(spec).values()) for spec in EVAL_SPECS.values())
    res = evaluate({"ref": REF, "other": OTHER}, ["x"], specs=[EVAL_SPECS["quantile"], *specs("sinkhorn")], n_boot=20)
    assert res.dominance["quantile"]["tests_calibrated"] is True
    assert res.dominance["sinkhorn"]["tests_calibrated"] is False and res.dominance["sinkhorn"]["test_problems"]
    table = summary_table(res)
    assert "[sinkhorn] intervals and tests have no error control" in table and "[quantile] intervals" not in table
