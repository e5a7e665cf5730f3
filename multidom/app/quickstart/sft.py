"""Supervised fine-tuning of the tiny LM on chatterbot pairs, cached by the hash of its config.

The loss is the usual next-token cross-entropy on the *response* tokens only (the chat-template
prefix ``<|bos|><|user|>prompt<|eos|><|assistant|>`` is context, labels ``-100``). The trained
model and tokenizer are saved with ``save_pretrained`` (safetensors + JSON, nothing unpickled on
load, DESIGN.md §7) under ``cache_dir/sft-<hash>/``; the hash covers everything that changes the
result (data, tokenizer, model and SFT settings, seed), so a second run with the same settings
loads the directory and goes straight to alignment.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, get_cosine_schedule_with_warmup

from multidom.app.quickstart.data import ChatPair
from multidom.app.quickstart.lm import TinyLMConfig, build_model, train_tokenizer

__all__ = ["SFTConfig", "cache_key", "encode_pairs", "load_or_train_sft", "load_sft"]

_FORMAT = 2  # bump when the SFT recipe changes in a way the config does not show


@dataclass
class SFTConfig:
    """Supervised fine-tuning settings."""

    epochs: int = 12
    """Passes over the training pairs."""
    batch_size: int = 32
    """Pairs per optimiser step."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate (cosine decay after a short warm-up)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.05
    """Share of the steps spent warming the learning rate up from 0."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sft.{name} must be positive, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"sft.learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"sft.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


def cache_key(**parts: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``parts`` (dataclasses are turned into dicts)."""
    plain = {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in parts.items()}
    blob = json.dumps({"format": _FORMAT, **plain}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def encode_pairs(
    pairs: list[ChatPair], tokenizer: PreTrainedTokenizerFast, max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded chat sequences with response-only labels.

    Returns ``input_ids (n, L)``, ``attention_mask (n, L)`` and ``labels (n, L)`` where ``L`` is
    the longest sequence (at most ``max_length``); labels are ``-100`` on the prompt prefix and on
    padding. A pair whose prefix alone reaches ``max_length`` is dropped.
    """
    rows: list[tuple[list[int], int]] = []
    for pair in pairs:
        prefix = _ids(tokenizer, [{"role": "user", "content": pair.prompt}], add_generation_prompt=True)
        full = _ids(tokenizer, [{"role": "user", "content": pair.prompt},
                                {"role": "assistant", "content": pair.response}])
        if len(prefix) < max_length:
            rows.append((full[:max_length], len(prefix)))
    if not rows:
        raise ValueError(f"every pair is longer than model.max_length={max_length}")
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, n_prefix) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        labels[i, n_prefix : len(ids)] = torch.tensor(ids[n_prefix:])
    return input_ids, mask, labels


def _ids(tokenizer: PreTrainedTokenizerFast, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def load_or_train_sft(
    pairs: list[ChatPair],
    *,
    model_config: TinyLMConfig,
    sft_config: SFTConfig,
    cache_dir: str | os.PathLike,
    key_parts: dict[str, Any],
    seed: int = 0,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Return the directory of the SFT model (training it first unless cached) and its summary.

    ``key_parts`` names what produced ``pairs`` (the data settings); with the model and SFT
    configs and the seed it forms the cache key. Training writes into a temporary sibling
    directory and renames it when complete, so an interrupted run never leaves a half cache; the
    temporary directory is removed on any exit, Ctrl-C included.
    The summary (``sft_summary.json``) holds the key, the final loss, the parameter count and the
    training time.
    """
    key = cache_key(model=model_config, sft=sft_config, seed=seed, **key_parts)
    target = Path(cache_dir).expanduser() / f"sft-{key[:16]}"
    summary_file = target / "sft_summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        return target, {**summary, "cached": True}

    started = time.perf_counter()
    torch.manual_seed(seed)
    texts = [p.prompt for p in pairs] + [p.response for p in pairs]
    tokenizer = train_tokenizer(texts, model_config.vocab_size)
    model = build_model(model_config, tokenizer, seed=seed)
    input_ids, mask, labels = encode_pairs(pairs, tokenizer, model_config.max_length)
    final_loss = _train(model, input_ids, mask, labels, sft_config, seed=seed, progress=progress)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        summary = {
            "key": key,
            "train_pairs": len(pairs),
            "parameters": sum(p.numel() for p in model.parameters()),
            "final_loss": final_loss,
            "seconds": time.perf_counter() - started,
        }
        (tmp / "sft_summary.json").write_text(json.dumps(summary, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same key first; keep theirs
            pass
    finally:  # gone after the rename; otherwise (Ctrl-C, a failed write, a lost race) nothing is left behind
        shutil.rmtree(tmp, ignore_errors=True)
    return target, {**summary, "cached": False}


def _train(model, input_ids, mask, labels, cfg: SFTConfig, *, seed: int, progress: bool) -> float:
    """Plain AdamW loop; returns the mean loss of the last epoch."""
    n = input_ids.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=total, desc="SFT", disable=not progress, unit="step")
    epoch_loss = float("nan")
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        losses = []
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            width = int(mask[idx].sum(1).max())  # right padding: trim the batch to its longest row
            out = model(input_ids=input_ids[idx, :width], attention_mask=mask[idx, :width],
                        labels=labels[idx, :width])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(out.loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        epoch_loss = sum(losses) / len(losses)
    bar.close()
    model.eval()
    return epoch_loss


def load_sft(path: str | os.PathLike) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """Load a cached SFT model and its tokenizer (safetensors, no pickle) with multidom's one loader."""
    from multidom.lm.loading import ModelSpec, load_model, load_tokenizer

    spec = ModelSpec(str(path))
    model, tokenizer = load_model(spec), load_tokenizer(spec)
    model.eval()
    return model, tokenizer
