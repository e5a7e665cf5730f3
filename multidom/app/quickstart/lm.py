"""A tiny causal LM with its own byte-level BPE tokenizer and chat template.

The quickstart model is a Hugging Face ``LlamaForCausalLM`` built from a config (a few hundred
thousand parameters) and a ``PreTrainedTokenizerFast`` trained with the ``tokenizers`` library on
the chatterbot text. Both are ordinary Transformers objects, saved with ``save_pretrained``, so
everything downstream (SFT, the online trainer, evaluation) follows the same path as a user's
hub model: ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)`` then
``model.generate``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TinyLMConfig", "build_model", "train_tokenizer"]

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS.values()]

# bos, then every message as <|role|>content<|eos|>; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass
class TinyLMConfig:
    """Shape of the tiny Llama-style model and its tokenizer."""

    vocab_size: int = 1024
    """BPE vocabulary size, special tokens and the 256 byte symbols included."""
    hidden_size: int = 96
    """Width of the residual stream."""
    num_layers: int = 2
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads per block (hidden_size must be divisible by it)."""
    intermediate_size: int = 256
    """Width of the SwiGLU feed-forward layer."""
    max_length: int = 64
    """Longest sequence (chat template, prompt and response) the model is trained and sampled on."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads})"
            )
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(
                f"model.vocab_size must be at least {256 + len(SPECIAL_TOKENS)} "
                f"(256 bytes + special tokens), got {self.vocab_size}"
            )


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it with the chat template.

    Byte-level pre-tokenisation means every string round-trips (no unknown token); the special
    tokens are ``<|pad|> <|bos|> <|eos|> <|system|> <|user|> <|assistant|>``. Padding is on the
    left, as generation wants; training code pads explicitly.
    """
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS.values()), padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(config: TinyLMConfig, tokenizer: PreTrainedTokenizerFast, *, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised ``LlamaForCausalLM`` of the configured shape (tied embeddings)."""
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=2 * config.max_length,  # room to sample past the SFT length (RoPE)
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
