"""Per-sequence seeded sampling: the same completions whatever the batch, the process or the device.

``torch.manual_seed`` + ``multinomial`` ties a sample to the batch it was drawn in (the random stream is
shared by the rows of a batch), so sharding prompts over ranks, or changing the batch size, changes the
baseline cloud. Here every sequence carries its own seed and draws its token at step ``t`` by the
Gumbel-max trick, ``y_t = argmax_v (log p_t(v) + g(seed, t, v))`` with ``g = -log(-log u)`` and ``u`` a
counter-based hash (splitmix64) of ``(seed, t, v)`` computed in integer arithmetic -- identical on every
device, and exactly a draw from ``p_t`` (Gumbel 1954; the "Gumbel-max trick"). The warpers (temperature,
top-k, top-p, min-p) are HF's own classes in HF's order; HF's generate then runs greedy decoding, which
picks the sampled token. Repetition penalty and ``generation_kwargs`` stay HF's (processors applied before).

* :func:`sequence_seed` -- the 63-bit seed of completion ``g`` of a prompt under a run seed;
* :class:`GumbelSampler` -- the logits processor that adds the noise (last in the list);
* :func:`seeded_processors` -- the warpers of a :class:`~multidom.lm.generation.Sampling` + the sampler.
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch

__all__ = ["sequence_seed", "uniform_hash", "GumbelSampler", "seeded_processors"]

_MASK63 = (1 << 63) - 1


def _signed(c: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def sequence_seed(seed: int, key: str, g: int) -> int:
    """Seed of completion ``g`` of the prompt whose stable key is ``key`` (a 63-bit int from SHA-256)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{key}\x00{int(g)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & _MASK63


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def uniform_hash(seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """``(n, vocab)`` float32 uniforms in ``(0, 1)``: splitmix64 of ``seed_i * 2^20 + step`` mixed with the token id.

    Pure integer arithmetic (int64 wrap-around), so every device gives the same bits."""
    v = torch.arange(vocab, dtype=torch.long, device=seeds.device)
    z = (seeds.view(-1, 1) * 1048583 + step) * _GOLDEN + v.view(1, -1) * _M2
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    z = z ^ _srl(z, 31)
    top24 = _srl(z, 40).to(torch.float32)  # 24 bits: exact in float32
    return (top24 + 0.5) / float(1 << 24)


class GumbelSampler:
    """HF logits processor: ``scores + Gumbel noise`` of each row's own seed; greedy decoding then samples.

    Args:
        seeds: ``(n,)`` int64, one per generated row (row ``i*G + g`` for prompt ``i``, completion ``g``).
        start: the input length at the first step (the prompt width of this batch).
    """

    def __init__(self, seeds: Sequence[int], start: int):
        self.seeds = torch.tensor(list(seeds), dtype=torch.long)
        self.start = start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.start
        u = uniform_hash(self.seeds.to(scores.device), step, scores.shape[-1])
        logp = torch.log_softmax(scores.float(), dim=-1)
        return logp - torch.log(-torch.log(u))


def seeded_processors(sampling: Any, seeds: Sequence[int], start: int) -> list:
    """The warpers HF applies when ``do_sample=True`` (same classes, same order), then :class:`GumbelSampler`."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out: list = []
    if sampling.temperature != 1.0:
        out.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        out.append(TopKLogitsWarper(top_k=sampling.top_k))
    if sampling.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=sampling.top_p))
    if sampling.min_p is not None:
        out.append(MinPLogitsWarper(min_p=sampling.min_p))
    out.append(GumbelSampler(seeds, start))
    return out
