"""Sampling ``G`` completions per prompt, and the sequence log-probabilities behind the KL estimate.

``generate`` returns the texts *and* the generated token ids, so the KL of a model to the
reference is computed on exactly the sampled tokens (no lossy re-tokenisation):

    KL(pi_m || pi_ref) = E_{x, y ~ pi_m}[ log pi_m(y|x) - log pi_ref(y|x) ]
                      ~= (1 / (B G)) sum_{i, j} ( log pi_m(y_ij|x_i) - log pi_ref(y_ij|x_i) ),

a sequence-level Monte-Carlo estimate (unbiased when sampling at temperature 1 without top-p/top-k
truncation; otherwise it is the log-ratio under the truncated sampler, said so in the report).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["Generations", "format_prompt", "generate", "sequence_logprobs", "kl_estimate", "same_tokenizer"]


@dataclass
class Generations:
    """``B`` prompts x ``G`` completions of one model.

    prompts: ``B`` prompt texts (as given); completions: ``B`` lists of ``G`` decoded texts;
    prompt_ids: ``B`` tensors ``(L_i,)`` fed to the model (chat template applied);
    completion_ids: ``B`` lists of ``G`` tensors ``(T_ij,)``: sampled tokens up to and including EOS.
    """

    prompts: list[Any]
    completions: list[list[str]]
    prompt_ids: list[torch.Tensor]
    completion_ids: list[list[torch.Tensor]]


def format_prompt(tokenizer: Any, prompt: Any) -> tuple[str, bool]:
    """Text fed to the model for ``prompt`` and whether special tokens are already in it.

    A chat-message list, or a plain string when the tokenizer has a chat template, goes through
    ``apply_chat_template(..., add_generation_prompt=True)``; otherwise the string is used as is.
    """
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, True
    if isinstance(prompt, list):
        return "\n".join(m["content"] for m in prompt), False
    return str(prompt), False


def _encode_prompt(tokenizer: Any, prompt: Any) -> torch.Tensor:
    text, templated = format_prompt(tokenizer, prompt)
    ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    if len(ids) == 0:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids = [bos]
    return torch.tensor(ids, dtype=torch.long)


def _stop_ids(tokenizer: Any, model: Any) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if eos is None:
            continue
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return ids


def _left_pad(seqs: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = s
        mask[i, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    G: int,
    *,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generate",
) -> Generations:
    """Sample ``G`` completions for each prompt (``B`` prompts, batches of ``batch_size`` prompts).

    Seeded per batch (``seed + batch index``), so a run is reproducible on one device. Prompts are
    left-padded; completions are cut after the first EOS and decoded without special tokens.
    """
    if G < 1:
        raise ValueError(f"G (completions per prompt) must be >= 1, got {G}")
    if not prompts:
        raise ValueError("no prompts to generate from")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stop = _stop_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop, default=0)
    encoded = [_encode_prompt(tokenizer, p) for p in prompts]
    completions: list[list[str]] = []
    completion_ids: list[list[torch.Tensor]] = []
    starts = range(0, len(prompts), batch_size)
    for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
        chunk = encoded[start:start + batch_size]
        ids, mask = _left_pad(chunk, pad_id)
        torch.manual_seed(seed + b)
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
            temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
            num_return_sequences=G, pad_token_id=pad_id,
        )
        new = out[:, ids.shape[1]:].cpu()
        for i in range(len(chunk)):
            row_ids, row_txt = [], []
            for g in range(G):
                tokens = _cut_at_stop(new[i * G + g], stop)
                row_ids.append(tokens)
                row_txt.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
            completion_ids.append(row_ids)
            completions.append(row_txt)
    model.train(was_training)
    return Generations(list(prompts), completions, encoded, completion_ids)


def _cut_at_stop(tokens: torch.Tensor, stop: set[int]) -> torch.Tensor:
    for t, tok in enumerate(tokens.tolist()):
        if tok in stop:
            return tokens[: t + 1].clone()
    return tokens.clone()


@torch.no_grad()
def sequence_logprobs(
    model: Any, prompt_ids: Sequence[torch.Tensor], completion_ids: Sequence[torch.Tensor], *, batch_size: int = 16
) -> torch.Tensor:
    """``log pi(y_n | x_n)`` summed over the completion tokens: ``(N,)`` for ``N`` (prompt, completion) pairs.

    prompt_ids, completion_ids: ``N`` tensors each (the completion ids as sampled). An empty
    completion has log-probability 0.
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.zeros(len(prompt_ids), dtype=torch.float64)
    for start in range(0, len(prompt_ids), batch_size):
        ps, cs = prompt_ids[start:start + batch_size], completion_ids[start:start + batch_size]
        seqs = [torch.cat([p, c]) for p, c in zip(ps, cs)]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        target = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (s, p) in enumerate(zip(seqs, ps)):
            ids[i, :len(s)] = s
            mask[i, :len(s)] = 1
            target[i, len(p):len(s)] = True
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        out[start:start + len(seqs)] = (logp * target[:, 1:]).sum(-1).double()
    model.train(was_training)
    return out


def kl_estimate(model: Any, reference: Any, generations: Generations, *, batch_size: int = 16) -> dict[str, float]:
    """Monte-Carlo ``KL(model || reference)`` on ``generations`` sampled from ``model`` (module docstring).

    Returns ``{"kl": mean, "kl_se": se}`` where ``se`` is the standard error over prompts (the
    ``G`` samples of a prompt are averaged first, prompts being the independent units).
    """
    flat_p = [p for p, row in zip(generations.prompt_ids, generations.completion_ids) for _ in row]
    flat_c = [c for row in generations.completion_ids for c in row]
    diff = sequence_logprobs(model, flat_p, flat_c, batch_size=batch_size) - sequence_logprobs(
        reference, flat_p, flat_c, batch_size=batch_size
    )
    per_prompt = diff.view(len(generations.prompt_ids), -1).mean(-1)
    n = per_prompt.numel()
    se = float(per_prompt.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {"kl": float(per_prompt.mean()), "kl_se": se}


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (same vocabulary), so log-ratios make sense."""
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())
