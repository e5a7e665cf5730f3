"""The one per-sequence log-probability helper: ``log pi(y | x)`` summed over completion tokens.

The AOT and offline trainers, the global-batch plan, evaluation's KL estimate and the experiments all
call :func:`sequence_logps` on a right-padded batch with a ``completion_mask``. A model carrying TRL's
fused LM head (:func:`add_log_prob_head`) scores only the completion tokens without materialising the
``(N, L, vocab)`` logits; any other causal LM goes through its logits. :func:`pack` builds the batch
from (prompt ids, completion ids) pairs.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["sequence_logps", "pack", "add_log_prob_head", "has_log_prob_head", "logps_of_pairs"]


def has_log_prob_head(model: Any) -> bool:
    """Whether ``model`` (or its PEFT base model) carries TRL's fused LM head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "module", base)  # DDP wrapper
    code = getattr(getattr(base.forward, "__func__", None), "__code__", None)
    return code is not None and code.co_name == "_fused_forward"


def add_log_prob_head(model: torch.nn.Module) -> None:
    """Patch TRL's fused LM head onto ``model`` (its base model under PEFT), unless it already has one."""
    from trl.trainer.utils import add_fused_lm_head

    if not has_log_prob_head(model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        add_fused_lm_head(base, outputs=("log_probs",))


def sequence_logps(model: Any, inputs: dict[str, torch.Tensor], n_per_example: int = 1) -> torch.Tensor:
    """Summed completion log-probabilities ``(b, S)`` of the ``b * S`` sequences in ``inputs``.

    Args:
        model: a causal LM (with or without TRL's fused head).
        inputs: ``input_ids``, ``attention_mask``, ``completion_mask``, each ``(N, L)``, right-padded;
            ``completion_mask`` marks the completion tokens (the first token of a sequence is never one).
        n_per_example: ``S``; ``N = b * S`` sequences, example-major.
    Returns:
        ``(b, S)`` in the model's dtype, with the graph to the parameters when grad is enabled.
    """
    mask = inputs["completion_mask"]
    ids = inputs["input_ids"]
    if has_log_prob_head(model):
        labels = ids.masked_fill(mask == 0, -100)
        out = model(input_ids=ids, attention_mask=inputs["attention_mask"], labels=labels, use_cache=False,
                    fused_lm_head=True)
        per_token = out.log_probs[:, -(mask.shape[1] - 1):]
    else:
        logits = model(input_ids=ids, attention_mask=inputs["attention_mask"], use_cache=False).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        per_token = logp * mask[:, 1:].to(logp.dtype)
    return per_token.sum(1).view(-1, n_per_example)


def pack(prompt_ids: Sequence[torch.Tensor], completion_ids: Sequence[torch.Tensor],
         pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``completion_mask`` ``(N, L)`` of ``N`` pairs."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    seqs = [torch.cat([torch.as_tensor(p), torch.as_tensor(c)]).long() for p, c in zip(prompt_ids, completion_ids)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    completion = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, p) in enumerate(zip(seqs, prompt_ids)):
        ids[i, : len(s)] = s
        attention[i, : len(s)] = 1
        completion[i, len(p): len(s)] = 1
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}


@torch.no_grad()
def logps_of_pairs(model: Any, prompt_ids: Sequence[torch.Tensor], completion_ids: Sequence[torch.Tensor], *,
                   batch_size: int = 16) -> torch.Tensor:
    """``(N,)`` float64 ``log pi(y_n | x_n)`` of ``N`` (prompt, completion) id pairs, in eval mode.

    An empty completion has log-probability 0.
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.zeros(len(prompt_ids), dtype=torch.float64)
    try:
        for start in range(0, len(prompt_ids), batch_size):
            batch = pack(prompt_ids[start:start + batch_size], completion_ids[start:start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            out[start:start + batch["input_ids"].shape[0]] = sequence_logps(model, batch).reshape(-1).double().cpu()
    finally:
        model.train(was_training)
    return out
