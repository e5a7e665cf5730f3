"""Tokenisation and collation for the offline trainers (AOT and offline multi-reward dominance).

Every example becomes one prompt and ``S`` completions: ``S = 2`` (chosen, rejected) for
preference data, ``S = 1`` with a boolean ``label`` for unpaired desirable/undesirable data
(KTO-style), ``S = K`` candidates with rewards ``(K, d)`` for offline multi-reward data. The
collator flattens a batch of ``b`` examples into ``b * S`` right-padded sequences (example-major:
row ``i * S + s``) with a ``completion_mask``; the trainer sums completion log-probabilities and
reshapes them to ``(b, S)`` (:func:`multidom.lm.logprobs.sequence_logps`).

Tokenisation follows TRL's ``DPOTrainer`` so that losses match it token for token: plain text
completions get the EOS token appended, the prompt is tokenised alone and with each completion,
and the completion starts where the two token sequences diverge; conversational rows (lists of
``{"role", "content"}`` messages) go through the tokenizer's chat template. Unlike TRL, a prompt
that fills ``max_length`` or an empty completion is an error naming the row, not a silent drop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = [
    "PREFERENCE_COLUMNS",
    "UNPAIRED_COLUMNS",
    "check_columns",
    "tokenize_example",
    "SequenceCollator",
]

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
UNPAIRED_COLUMNS = ("prompt", "completion", "label")


def check_columns(column_names: Sequence[str], required: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` naming every required column the dataset lacks."""
    missing = [c for c in required if c not in column_names]
    if missing:
        raise ValueError(
            f"{what} dataset is missing column(s) {', '.join(map(repr, missing))}; "
            f"it needs {', '.join(required)} (found: {', '.join(column_names) or 'none'})"
        )


def _is_conversational(x: Any) -> bool:
    return isinstance(x, list) and len(x) > 0 and isinstance(x[0], dict) and "role" in x[0]


def _template_ids(tokenizer: Any, messages: list, **kw: Any) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, **kw)
    ids = out["input_ids"] if hasattr(out, "keys") else out
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _is_empty(completion: Any) -> bool:
    if completion is None:
        return True
    if isinstance(completion, str):
        return not completion.strip()
    if _is_conversational(completion):
        return all(not str(m.get("content") or "").strip() for m in completion)
    return len(completion) == 0


def tokenize_example(
    tokenizer: Any,
    prompt: Any,
    completions: Sequence[Any],
    *,
    max_length: int | None,
    row: int = 0,
) -> dict[str, Any]:
    """Tokenise one prompt with ``S`` completions (strings, or message lists for chat data).

    Returns ``{"prompt_ids": list[int], "completion_ids": list[list[int]]}``; completions are cut
    so that ``len(prompt_ids) + len(completion) <= max_length`` (keep the start, like TRL).

    Raises:
        ValueError: an empty completion, a prompt of ``>= max_length`` tokens (nothing of the
            completion would be left), or mixed plain/conversational fields; ``row`` names the row.
    """
    for s, completion in enumerate(completions):
        if _is_empty(completion):
            raise ValueError(f"row {row}: completion {s} is empty; every completion needs at least one token")
    if _is_conversational(prompt):
        if not all(_is_conversational(c) for c in completions):
            raise ValueError(f"row {row}: prompt is a conversation but a completion is not (mixed formats)")
        prompt_ids = _template_ids(tokenizer, prompt, add_generation_prompt=True)
        full = [_template_ids(tokenizer, prompt + list(c)) for c in completions]
    else:
        if not isinstance(prompt, str) or not all(isinstance(c, str) for c in completions):
            raise ValueError(f"row {row}: prompt and completions must all be strings or all be message lists")
        eos = tokenizer.eos_token or ""
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        full = [list(tokenizer(prompt + (c if c.endswith(eos) else c + eos))["input_ids"]) for c in completions]
    start = min(_common_prefix(prompt_ids, f) for f in full)
    if max_length is not None and start >= max_length:
        raise ValueError(
            f"row {row}: the prompt has {start} tokens, which fills max_length = {max_length}; "
            "raise max_length or shorten the prompt"
        )
    room = None if max_length is None else max_length - start
    completion_ids = [f[start:][:room] for f in full]
    for s, ids in enumerate(completion_ids):
        if not ids:
            raise ValueError(f"row {row}: completion {s} has no tokens after tokenisation")
    return {"prompt_ids": prompt_ids[:start], "completion_ids": completion_ids}


@dataclass
class SequenceCollator:
    """Flatten ``b`` tokenised examples into ``b * S`` right-padded sequences.

    Output keys: ``input_ids``, ``attention_mask``, ``completion_mask`` ``(b * S, L)``; and,
    when present in the examples, ``ref_logps`` ``(b, S)``, ``rewards`` ``(b, K, d)``,
    ``label`` ``(b,)`` bool.
    """

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs, masks = [], []
        for ex in examples:
            for comp in ex["completion_ids"]:
                seqs.append(list(ex["prompt_ids"]) + list(comp))
                masks.append([0] * len(ex["prompt_ids"]) + [1] * len(comp))
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        completion = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, m) in enumerate(zip(seqs, masks)):
            input_ids[i, : len(s)] = torch.tensor(s)
            attention[i, : len(s)] = 1
            completion[i, : len(s)] = torch.tensor(m)
        out = {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}
        if "ref_logps" in examples[0]:
            out["ref_logps"] = torch.tensor([ex["ref_logps"] for ex in examples], dtype=torch.float32)
        if "rewards" in examples[0]:
            out["rewards"] = torch.tensor([ex["rewards"] for ex in examples], dtype=torch.float32)
        if "label" in examples[0]:
            out["label"] = torch.tensor([bool(ex["label"]) for ex in examples], dtype=torch.bool)
        return out
