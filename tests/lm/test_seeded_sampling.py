"""Per-sequence seeded sampling (multidom.lm.seeded): a draw from the warped distribution, and the same
completions whatever the batch size, the batch's other prompts or their order."""
from __future__ import annotations

import pytest
import torch
from lm_tiny import PROMPTS, chat, load, save_tiny_lm

from multidom.lm.generation import Sampling, generate
from multidom.lm.seeded import GumbelSampler, seeded_processors, sequence_seed, uniform_hash


def test_uniform_hash_is_uniform_and_independent_of_the_batch():
    seeds = torch.arange(20000, dtype=torch.long) * 7919 + 3
    u = uniform_hash(seeds, step=2, vocab=8)
    assert u.min() > 0 and u.max() < 1
    # mean 1/2 and variance 1/12 per column, within 5 standard errors
    torch.testing.assert_close(u.mean(0), torch.full((8,), 0.5), atol=5 * (1 / 12 / 20000) ** 0.5, rtol=0)
    torch.testing.assert_close(u.var(0), torch.full((8,), 1 / 12), atol=2e-3, rtol=0)
    assert abs(float(torch.corrcoef(u[:, :2].T)[0, 1])) < 0.03  # tokens of a row uncorrelated
    # a row's noise depends on its seed only: row 5 alone equals row 5 in the batch
    assert torch.equal(uniform_hash(seeds[5:6], 2, 8)[0], u[5])
    assert not torch.equal(uniform_hash(seeds[5:6], 3, 8)[0], u[5])  # and on the step


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.7, top_k=4, top_p=0.9, min_p=0.05)])
def test_gumbel_max_samples_the_warped_distribution(sampling):
    """Token frequencies over 40000 seeds match HF's warped softmax (chi-square, 5 sigma)."""
    torch.manual_seed(0)
    logits = torch.randn(1, 12) * 1.5
    n = 40000
    procs = seeded_processors(sampling, [sequence_seed(0, "p", g) for g in range(n)], start=0)
    warped, scores = logits.expand(n, -1).clone(), None
    for proc in procs[:-1]:
        warped = proc(None, warped)
    scores = procs[-1](torch.zeros(n, 0, dtype=torch.long), warped)
    counts = torch.bincount(scores.argmax(-1), minlength=12).double()
    p = torch.softmax(warped[0], -1).double()
    expected = n * p
    keep = expected > 0
    assert counts[~keep].sum() == 0  # filtered tokens are never drawn
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    k = int(keep.sum()) - 1
    assert chi2 < k + 5 * (2 * k) ** 0.5, (chi2, k)


def test_gumbel_sampler_keeps_minus_inf():
    scores = torch.tensor([[0.0, float("-inf"), 1.0]])
    out = GumbelSampler([123], start=0)(torch.zeros(1, 0, dtype=torch.long), scores)
    assert out[0, 1] == float("-inf") and torch.isfinite(out[0, [0, 2]]).all()


def test_per_prompt_seeds_do_not_depend_on_the_batch(tmp_path):
    model, tok = load(save_tiny_lm(tmp_path / "lm"))
    s = Sampling(max_new_tokens=8, temperature=0.9, top_p=0.95, top_k=20, repetition_penalty=1.1)
    prompts = chat(PROMPTS)
    a = generate(model, tok, prompts, 3, sampling=s, batch_size=4, seed=1, per_prompt_seeds=True)
    b = generate(model, tok, prompts[::-1], 3, sampling=s, batch_size=1, seed=1, per_prompt_seeds=True)
    c = generate(model, tok, prompts[1:3], 3, sampling=s, batch_size=2, seed=1, per_prompt_seeds=True)
    assert a.texts() == b.texts()[::-1]
    assert a.texts()[1:3] == c.texts()
    assert [x.tolist() for x in a.completion_ids[0]] == [x.tolist() for x in b.completion_ids[-1]]
    d = generate(model, tok, prompts, 3, sampling=s, batch_size=4, seed=2, per_prompt_seeds=True)
    assert d.texts() != a.texts()  # the run seed matters
    assert len({t for row in a.texts() for t in row}) > 6  # and the G completions of a prompt differ
