"""``multidom train`` with the policy's sampling made independent of the batch (helper of
``test_two_processes_end_to_end.py``, run under ``torchrun`` or plain ``python``).

HF ``generate`` with ``do_sample`` draws every row of a batch from one random stream, so the same prompts split
over two processes give other completions than on one process, and the two runs cannot be compared. Here each
row is generated alone, after ``torch.manual_seed`` of a hash of (its prompt tokens, its index among the batch's
rows with that prompt, the number of sampling calls so far): the completions depend on the prompt and the step
only. Everything else -- rewards, potentials, advantages, the loss, the gradient all-reduce -- is the trainer's.
"""
from __future__ import annotations

import hashlib
import sys

import torch
from transformers import GenerationMixin

_original = GenerationMixin.generate
_calls = [0]


def _seeded_generate(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
    if generation_config is None or not generation_config.do_sample or "logits_processor" in kwargs:
        return _original(self, input_ids=input_ids, attention_mask=attention_mask,
                         generation_config=generation_config, **kwargs)
    call, _calls[0] = _calls[0], _calls[0] + 1
    seen: dict[tuple, int] = {}
    rows = []
    for ids, mask in zip(input_ids, attention_mask):
        prompt = ids[mask.bool()]
        key = tuple(prompt.tolist())
        g = seen.get(key, 0)
        seen[key] = g + 1
        digest = hashlib.sha256(repr((key, g, call)).encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:7], "little"))
        out = _original(self, input_ids=prompt[None], attention_mask=torch.ones_like(prompt)[None],
                        generation_config=generation_config, **kwargs)
        rows.append(out[0, prompt.shape[0]:])
    pad = generation_config.pad_token_id if generation_config.pad_token_id is not None else 0
    width = max(r.shape[0] for r in rows)
    completions = torch.full((len(rows), width), pad, dtype=input_ids.dtype, device=input_ids.device)
    for i, r in enumerate(rows):
        completions[i, :r.shape[0]] = r
    return torch.cat([input_ids, completions], dim=1)


GenerationMixin.generate = _seeded_generate

if __name__ == "__main__":
    from multidom.app.cli import main

    sys.exit(main(sys.argv[1:]))
