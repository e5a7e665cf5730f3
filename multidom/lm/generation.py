"""The one generation helper of multidom: ``G`` sampled completions per prompt, with their token ids.

Used for the baseline (reference) cloud of the online trainer, for evaluation and by the experiments.
Prompts are formatted as TRL's trainers format them, so a baseline sampled here comes from the same
distribution as the policy's generations during training:

* a conversation (a list of ``{"role", "content"}`` messages) goes through the tokenizer's chat
  template with ``add_generation_prompt=True`` (plus ``chat_template_kwargs``);
* a plain string is used as is; in both cases the text is tokenised with ``add_special_tokens=False``.

Sampling follows :class:`Sampling` (temperature, top-p/top-k/min-p, repetition penalty, extra
``generation_kwargs``: the fields of TRL's ``GRPOConfig`` of the same names). Each batch is seeded
(``seed + batch index``), so the same call gives the same completions on the same device. Completions
are cut after the first stop token (kept, as TRL keeps EOS) and decoded without special tokens;
conversational prompts get ``[{"role": "assistant", "content": text}]`` back, as TRL hands them to
reward functions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["Sampling", "Generations", "format_prompt", "encode_prompt", "generate", "is_conversational", "prompt_key"]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings (names as in TRL's ``GRPOConfig``)."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    generation_kwargs: Mapping[str, Any] = field(default_factory=dict)
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

    @classmethod
    def from_trl(cls, args: Any, max_new_tokens: int | None = None) -> Sampling:
        """The sampling settings of a TRL ``GRPOConfig`` (so the baseline matches training)."""
        return cls(
            max_new_tokens=int(max_new_tokens or args.max_completion_length),
            temperature=float(args.temperature), top_p=float(args.top_p), top_k=int(args.top_k or 0),
            min_p=args.min_p, repetition_penalty=float(args.repetition_penalty),
            generation_kwargs=dict(getattr(args, "generation_kwargs", None) or {}),
            chat_template_kwargs=dict(getattr(args, "chat_template_kwargs", None) or {}),
        )

    def key(self) -> dict[str, Any]:
        """A JSON-able description (for cache keys)."""
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}


@dataclass
class Generations:
    """``B`` prompts x ``G`` completions of one model.

    prompts: the ``B`` prompts as given; completions: ``B`` lists of ``G`` completions (texts, or
    one-message assistant conversations for conversational prompts); prompt_ids: ``B`` tensors
    ``(L_i,)`` fed to the model; completion_ids: ``B`` lists of ``G`` tensors ``(T_ij,)`` (sampled
    tokens up to and including the stop token).
    """

    prompts: list[Any]
    completions: list[list[Any]]
    prompt_ids: list[torch.Tensor]
    completion_ids: list[list[torch.Tensor]]

    def texts(self) -> list[list[str]]:
        """The completions as plain texts."""
        return [[c if isinstance(c, str) else c[-1]["content"] for c in row] for row in self.completions]


def is_conversational(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict) and "role" in prompt[0]


def format_prompt(tokenizer: Any, prompt: Any, chat_template_kwargs: Mapping[str, Any] | None = None) -> str:
    """The text fed to the model for ``prompt`` (chat template for conversations, as TRL does)."""
    if is_conversational(prompt):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True,
                                             **dict(chat_template_kwargs or {}))
    if not isinstance(prompt, str):
        raise ValueError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")
    return prompt


def encode_prompt(tokenizer: Any, prompt: Any, chat_template_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """``(L,)`` token ids of the formatted prompt (never empty: BOS or EOS stands in for ``""``)."""
    ids = tokenizer(format_prompt(tokenizer, prompt, chat_template_kwargs), add_special_tokens=False)["input_ids"]
    if len(ids) == 0:
        ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def _stop_ids(tokenizer: Any, model: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if eos is not None:
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


def _cut_at_stop(tokens: torch.Tensor, stop: set[int]) -> torch.Tensor:
    for t, tok in enumerate(tokens.tolist()):
        if tok in stop:
            return tokens[: t + 1].clone()
    return tokens.clone()


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    G: int,
    *,
    sampling: Sampling | None = None,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
    desc: str = "generate",
    per_prompt_seeds: bool = False,
) -> Generations:
    """Sample ``G`` completions for each of ``B`` prompts (batches of ``batch_size`` prompts).

    Args:
        model: a causal LM (any device; the batch goes to the model's device).
        tokenizer: its tokenizer (a pad token is not required: the stop token pads).
        prompts: ``B`` strings or conversations.
        G: completions per prompt, ``>= 1``.
        sampling: :class:`Sampling` (default: temperature 1, 32 new tokens).
        seed: batch ``b`` is sampled after ``torch.manual_seed(seed + b)``.
        per_prompt_seeds: instead, completion ``g`` of each prompt is drawn with its own seed
            (:func:`multidom.lm.seeded.sequence_seed` of ``seed``, the prompt and ``g``; Gumbel-max
            sampling, :mod:`multidom.lm.seeded`), so the samples do not depend on the batch size, the
            other prompts of the batch, or how prompts are sharded over processes.
        progress: show a tqdm bar counting prompts, labelled ``desc``.
    Returns:
        :class:`Generations`.
    """
    if isinstance(G, bool) or not isinstance(G, int) or G < 1:
        raise ValueError(f"G (completions per prompt) must be an integer >= 1, got {G!r}")
    if not prompts:
        raise ValueError("no prompts to generate from")
    s = sampling or Sampling()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stop = _stop_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop, default=0)
    encoded = [encode_prompt(tokenizer, p, s.chat_template_kwargs) for p in prompts]
    completions: list[list[Any]] = []
    completion_ids: list[list[torch.Tensor]] = []
    extra = {k: v for k, v in (("min_p", s.min_p),) if v is not None}
    try:
        with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress) as bar:
            for b, start in enumerate(range(0, len(prompts), batch_size)):
                chunk = encoded[start:start + batch_size]
                ids, mask = _left_pad(chunk, pad_id)
                if per_prompt_seeds:
                    out = _generate_seeded(model, ids.to(device), mask.to(device), prompts[start:start + batch_size],
                                           G, s, seed, pad_id)
                else:
                    torch.manual_seed(seed + b)
                    out = model.generate(
                        input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                        temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None,
                        repetition_penalty=s.repetition_penalty, max_new_tokens=s.max_new_tokens,
                        num_return_sequences=G, pad_token_id=pad_id, **extra, **dict(s.generation_kwargs),
                    )
                new = out[:, ids.shape[1]:].cpu()
                for i, prompt in enumerate(prompts[start:start + batch_size]):
                    row_ids = [_cut_at_stop(new[i * G + g], stop) for g in range(G)]
                    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in row_ids]
                    completion_ids.append(row_ids)
                    completions.append([[{"role": "assistant", "content": t}] for t in texts]
                                       if is_conversational(prompt) else texts)
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return Generations(list(prompts), completions, encoded, completion_ids)


def prompt_key(prompt: Any) -> str:
    """A stable string key of a prompt (the string itself, or the conversation as sorted JSON)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def _generate_seeded(model: Any, ids: torch.Tensor, mask: torch.Tensor, prompts: Sequence[Any], G: int,
                     s: Sampling, seed: int, pad_id: int) -> torch.Tensor:
    """One ``model.generate`` call whose row ``i*G + g`` samples with its own seed (:mod:`multidom.lm.seeded`)."""
    from transformers import LogitsProcessorList

    from multidom.lm.seeded import seeded_processors, sequence_seed

    seeds = [sequence_seed(seed, prompt_key(p), g) for p in prompts for g in range(G)]
    processors = LogitsProcessorList(seeded_processors(s, seeds, ids.shape[1]))
    return model.generate(
        input_ids=ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0), do_sample=False,
        num_beams=1, logits_processor=processors, repetition_penalty=s.repetition_penalty,
        max_new_tokens=s.max_new_tokens,
        pad_token_id=pad_id, temperature=None, top_p=None, top_k=None, min_p=None, synced_gpus=_sharded(model),
        **dict(s.generation_kwargs),
    )


def _sharded(model: Any) -> bool:
    """Whether every forward pass of ``model`` is a collective over ranks (FSDP1/FSDP2, ZeRO-3): generation
    must then keep stepping until every rank is done (``synced_gpus``). HF detects FSDP1 and ZeRO-3 itself but
    not a module sharded by ``fully_shard`` (accelerate's FSDP2)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    from torch.distributed.fsdp import FullyShardedDataParallel

    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import FSDPModule
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) or
               any(hasattr(p, "ds_id") for p in m.parameters(recurse=False)) for m in model.modules())
