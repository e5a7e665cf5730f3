"""Shared test helper: a random tiny Llama with a word-level tokenizer and a chat template, saved to disk."""
from __future__ import annotations

from pathlib import Path

import torch

from multidom.lm.loading import ModelSpec, load_model, load_tokenizer

WORDS = ("hello hi good great bad awful fine thanks yes no maybe the a is you i am very "
         "what how why today weather nice day sun rain happy sad").split()
PROMPTS = ["hello how are you", "what is the weather", "is it a nice day", "why are you sad"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<' + m['role'] + '> ' + m['content'] + ' ' + eos_token + ' ' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}"
)


def save_tiny_lm(path: Path, seed: int = 0, hidden: int = 16) -> Path:
    """A random tiny Llama + word-level tokenizer with a chat template, saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>", "<user>", "<assistant>", "<system>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS + ["are", "it"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", additional_special_tokens=specials[4:])
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def load(path) -> tuple:
    """``(model, tokenizer)`` through multidom's one loader."""
    spec = ModelSpec(str(path))
    return load_model(spec), load_tokenizer(spec)


def chat(prompts):
    """Plain prompts as one-message conversations."""
    return [[{"role": "user", "content": p}] for p in prompts]
