"""A task whose rewards are known exactly, for tests and the frontier benchmark (experiments/frontier.py).

Vocabulary: ``<eos>``, class A ``a0..a4``, class B ``b0..b4``, neutral ``n0..n9``. Prompts are short
neutral sequences. Attributes of a completion (its tokens before ``<eos>``), all higher-is-better:

* ``share_a`` = fraction of class-A tokens, ``share_b`` = fraction of class-B tokens (0 when empty),
* ``brevity`` = ``1 - length / max_length``.

A random tiny Llama samples roughly uniformly, so the reference has ``share_a ≈ share_b ≈ 5/21`` and
long completions; a policy that writes short mixes of A and B tokens beats it on all three attributes
at once, while optimising one attribute alone (say ``share_a``) lowers another (``share_b``) -- the
trade-off a weighted sum hides and dominance refuses.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["VOCAB", "build_toy_model", "toy_rewards", "toy_prompts", "reward_cloud"]

VOCAB = ["<eos>"] + [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)] + [f"n{i}" for i in range(10)]
_A = {VOCAB.index(f"a{i}") for i in range(5)}
_B = {VOCAB.index(f"b{i}") for i in range(5)}


def build_toy_model(path: str | Path, *, hidden: int = 32, layers: int = 1, seed: int = 0) -> Path:
    """Save a random tiny Llama and a word-level tokenizer for :data:`VOCAB` under ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>",
                                        unk_token="<eos>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=0, pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 0
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tokens(ids: Sequence[int]) -> list[int]:
    out = []
    for t in ids:
        if t == 0:
            break
        out.append(int(t))
    return out


def toy_rewards(max_length: int = 8, attributes: Sequence[str] = ("share_a", "share_b", "brevity")) -> list:
    """The exact reward models (``reward_models`` callables reading ``completion_ids``)."""
    from reward_models import create

    def share(cls):
        def fn(prompts, completions, completion_ids=None, **_):
            toks = [_tokens(ids) for ids in completion_ids]
            return [sum(t in cls for t in ts) / len(ts) if ts else 0.0 for ts in toks]
        return fn

    def brevity(prompts, completions, completion_ids=None, **_):
        return [1.0 - len(_tokens(ids)) / max_length for ids in completion_ids]

    table = {"share_a": share(_A), "share_b": share(_B), "brevity": brevity}
    return [create({"type": "callable", "fn": table[a], "name": a}) for a in attributes]


def toy_prompts(n: int, seed: int = 0, length: int = 3) -> list[str]:
    """``n`` distinct prompts of ``length`` neutral tokens."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen[" ".join(f"n{rng.randrange(10)}" for _ in range(length))] = None
    return list(seen)


def reward_cloud(model: Any, tokenizer: Any, prompts: Sequence[str], samples: int, scorer: Any, *,
                 max_new_tokens: int = 8, seed: int = 0) -> torch.Tensor:
    """``(len(prompts), samples, d)`` reward vectors of ``model``'s sampled completions (temperature 1)."""
    from multidom.lm.generation import Sampling, generate

    gens = generate(model, tokenizer, list(prompts), samples, sampling=Sampling(max_new_tokens=max_new_tokens),
                    batch_size=max(1, 64 // samples), seed=seed)
    flat_p = [p for p in prompts for _ in range(samples)]
    values = scorer(flat_p, [c for cs in gens.completions for c in cs],
                    completion_ids=[t.tolist() for r in gens.completion_ids for t in r])
    return values.reshape(len(prompts), samples, -1)
