"""multidom.lm: the one generation helper and the one per-sequence log-prob helper, on a tiny saved model."""
from __future__ import annotations

import pytest
import torch
from lm_tiny import PROMPTS, chat, load

from multidom.lm.generation import Sampling, generate
from multidom.lm.logprobs import logps_of_pairs


def test_generate_shapes_stop_and_seed(tiny_lms):
    model, tok = load(tiny_lms["ref"])
    a = generate(model, tok, chat(PROMPTS), 3, sampling=Sampling(max_new_tokens=6), batch_size=3, seed=7)
    b = generate(model, tok, chat(PROMPTS), 3, sampling=Sampling(max_new_tokens=6), batch_size=3, seed=7)
    c = generate(model, tok, chat(PROMPTS), 3, sampling=Sampling(max_new_tokens=6), batch_size=3, seed=8)
    assert len(a.completions) == len(PROMPTS) and all(len(row) == 3 for row in a.completions)
    assert a.completions == b.completions and a.completions != c.completions
    assert a.completions[0][0][0]["role"] == "assistant"  # conversational prompts get messages back, as in TRL
    for row in a.completion_ids:
        for ids in row:
            assert 1 <= len(ids) <= 6
            assert (ids[:-1] != tok.eos_token_id).all()  # cut right after the first EOS
    assert tok.decode(a.prompt_ids[0]).startswith("<bos> <user> hello how are you")  # the chat template
    plain = generate(model, tok, PROMPTS[:1], 2, sampling=Sampling(max_new_tokens=3), seed=7)
    assert tok.decode(plain.prompt_ids[0]) == "hello how are you"  # a plain string is used as is, as TRL does
    assert isinstance(plain.completions[0][0], str)


def test_logps_of_pairs_match_a_manual_forward(tiny_lms):
    model, tok = load(tiny_lms["ref"])
    gens = generate(model, tok, chat(PROMPTS[:2]), 2, sampling=Sampling(max_new_tokens=5), seed=0)
    p, c = gens.prompt_ids[1], gens.completion_ids[1][0]
    batched = logps_of_pairs(model, [gens.prompt_ids[0], p], [gens.completion_ids[0][1], c], batch_size=2)
    with torch.no_grad():
        logits = model(torch.cat([p, c])[None]).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    manual = sum(float(logp[len(p) - 1 + t, c[t]]) for t in range(len(c)))
    assert float(batched[1]) == pytest.approx(manual, abs=1e-4)


def test_fused_head_and_logits_paths_agree(tiny_lms):
    """The one log-prob helper: TRL's fused LM head (trainers) and the plain logits path (evaluation) give the
    same per-sequence sums, and the sums match the manual forward of the other test."""
    import copy

    from multidom.lm.logprobs import add_log_prob_head, has_log_prob_head, pack, sequence_logps

    model, tok = load(tiny_lms["ref"])
    gens = generate(model, tok, chat(PROMPTS), 2, sampling=Sampling(max_new_tokens=5), seed=3)
    prompts = [p for p, row in zip(gens.prompt_ids, gens.completion_ids) for _ in row]
    comps = [c for row in gens.completion_ids for c in row]
    batch = pack(prompts, comps, pad_id=tok.pad_token_id)
    fused = copy.deepcopy(model)
    add_log_prob_head(fused)
    assert has_log_prob_head(fused) and not has_log_prob_head(model)
    with torch.no_grad():
        plain = sequence_logps(model.eval(), batch, n_per_example=2)
        head = sequence_logps(fused.eval(), batch, n_per_example=2)
    assert plain.shape == (len(PROMPTS), 2)
    torch.testing.assert_close(head.float(), plain.float(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(plain.reshape(-1).double(), logps_of_pairs(model, prompts, comps), atol=1e-4, rtol=0)
