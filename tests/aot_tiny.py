"""Tiny random-weight causal LM and character tokenizer for the offline-trainer tests (no network)."""
from __future__ import annotations

import string

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<eos>", "<unk>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: every printable ASCII character is one token."""
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def tiny_model(seed: int = 0, vocab_size: int | None = None, hidden: int = 16) -> LlamaForCausalLM:
    """A 1-layer Llama with hidden size 16 and random weights (seeded)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size or len(tiny_tokenizer()), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def preference_rows(n: int, seed: int = 0) -> dict[str, list[str]]:
    """``n`` synthetic preference rows: chosen answers repeat a letter pattern, rejected ones are noise."""
    g = torch.Generator().manual_seed(seed)
    letters = string.ascii_lowercase
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for i in range(n):
        idx = torch.randint(0, 26, (12,), generator=g).tolist()
        rows["prompt"].append("Q" + "".join(letters[j] for j in idx[:3 + i % 3]) + ":")
        rows["chosen"].append("ab" * (2 + i % 3))
        rows["rejected"].append("".join(letters[j] for j in idx[3:7 + i % 4]))
    return rows
