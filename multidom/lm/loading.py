"""The one model/tokenizer loader of multidom (trainers, evaluation, the quickstart and the CLI use it).

A :class:`ModelSpec` is the ``model:`` section of every config::

    model:
      name_or_path: ./runs/sft      # a local folder or a hub id
      tokenizer: null               # default: name_or_path
      ref_model: null               # a separate frozen reference (default: the initial policy)
      dtype: float32                # float32 | bfloat16 | float16 | auto
      trust_remote_code: false      # a YAML boolean; applies to this model only (DESIGN.md §7)
      peft: {r: 8, lora_alpha: 16}  # optional LoRA (peft.LoraConfig fields); reference = adapter disabled

Policy (DESIGN.md §7): remote code never runs unless the config says ``true`` (a real boolean: the
string ``'false'`` is an error, not a truthy value); a local-looking path that does not exist is a
one-line error; with the hub unreachable (``HF_HUB_OFFLINE=1`` or no network) a hub id fails at once
with a message to pass a local path instead of retrying for a minute.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from multidom.keys import check_keys

__all__ = ["ModelSpec", "DTYPES", "load_model", "load_tokenizer", "load_model_and_tokenizer", "lora_config",
           "looks_local", "hub_reachable"]

DTYPES = ("float32", "bfloat16", "float16", "auto")


def looks_local(path: str) -> bool:
    """A path the user meant as a folder on this machine (absolute, ``./``, ``../``, ``~``, or existing)."""
    return path.startswith(("/", "./", "../", "~")) or path in {".", ".."} or Path(path).expanduser().exists()


@dataclass(frozen=True)
class ModelSpec:
    """Where a causal LM and its tokenizer come from, and how to load them (the ``model:`` section)."""

    name_or_path: str
    """A local folder (``save_pretrained`` output) or a hub id."""
    tokenizer: str | None = None
    """The tokenizer's folder or id, when it is not ``name_or_path``."""
    ref_model: str | None = None
    """A separate frozen reference model; default: the initial policy (adapter disabled under PEFT)."""
    dtype: str = "float32"
    """Weights dtype: float32 | bfloat16 | float16 | auto."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code (off unless you trust it; DESIGN.md §7)."""
    peft: Mapping[str, Any] | None = None
    """LoRA settings (``peft.LoraConfig`` fields) or None for full fine-tuning."""

    def __post_init__(self) -> None:
        if not isinstance(self.name_or_path, str) or not self.name_or_path.strip():
            raise ValueError("model.name_or_path must be a local folder or a hub id")
        for key in ("tokenizer", "ref_model"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"model.{key} must be a path or hub id, got {value!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"model.trust_remote_code must be true or false (a YAML boolean), got "
                             f"{self.trust_remote_code!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.peft is not None and not isinstance(self.peft, Mapping):
            raise ValueError(f"model.peft must be a mapping of peft.LoraConfig fields, got {self.peft!r}")
        for key in ("name_or_path", "tokenizer", "ref_model"):
            value = getattr(self, key)
            if value and looks_local(value) and not Path(value).expanduser().exists():
                raise FileNotFoundError(f"model.{key}: path does not exist: {value}")

    @classmethod
    def from_config(cls, value: Any, section: str = "model") -> ModelSpec:
        """From a YAML value: a path / hub id string or a mapping of the fields above."""
        if isinstance(value, ModelSpec):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls(str(value))
        if not isinstance(value, Mapping):
            raise ValueError(f"{section} must be a path / hub id or a mapping with 'name_or_path'")
        names = [f.name for f in dataclasses.fields(cls)]
        check_keys(value, names, section)
        if "name_or_path" not in value:
            raise ValueError(f"{section} needs 'name_or_path' (a local folder or a hub id)")
        return cls(**dict(value))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _from_pretrained(loader: Any, path: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with one-line errors; a hub id fails fast when the hub is unreachable."""
    local = Path(path).expanduser()
    if not local.exists() and not hub_reachable():
        raise FileNotFoundError(f"cannot load {what} {path!r}: it is not a local folder and the Hugging Face hub "
                                f"is unreachable; {OFFLINE_HINT}")
    try:
        return loader.from_pretrained(str(local) if local.exists() else path, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if local.exists() else f" ({OFFLINE_HINT})"
        raise FileNotFoundError(f"cannot load {what} {path!r}: {first}{hint}") from None


_REACHABLE: dict[str, bool] = {}
OFFLINE_HINT = "download it once and pass its local path (or set HF_HUB_OFFLINE=1 to use your Hugging Face cache)"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a hub id may be fetched: True under ``HF_HUB_OFFLINE=1`` (the libraries then read only their
    cache, at once); otherwise one quick TCP connect to the hub endpoint (cached per process) instead of a
    minute of retries."""
    if _hub_offline():
        return True
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _REACHABLE:
        url = urlparse(endpoint)
        try:
            with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                          timeout=timeout):
                _REACHABLE[endpoint] = True
        except OSError:
            _REACHABLE[endpoint] = False
    return _REACHABLE[endpoint]


def _torch_dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def load_model(spec: ModelSpec, path: str | None = None) -> Any:
    """The causal LM at ``path`` (default ``spec.name_or_path``) with the spec's dtype and code policy."""
    from transformers import AutoModelForCausalLM

    return _from_pretrained(AutoModelForCausalLM, path or spec.name_or_path, "model",
                            dtype=_torch_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code)


def load_tokenizer(spec: ModelSpec) -> Any:
    """The tokenizer, with ``pad_token`` set to EOS when it has none (TRL's convention)."""
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, spec.tokenizer or spec.name_or_path, "tokenizer",
                           trust_remote_code=spec.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def lora_config(spec: ModelSpec) -> Any:
    """``peft.LoraConfig(task_type="CAUSAL_LM", **spec.peft)`` or ``None``; unknown fields are one-line errors."""
    if not spec.peft:
        return None
    from peft import LoraConfig

    names = {f.name for f in dataclasses.fields(LoraConfig)}
    check_keys(spec.peft, names, "model.peft")
    return LoraConfig(task_type="CAUSAL_LM", **dict(spec.peft))


def load_model_and_tokenizer(spec: ModelSpec) -> tuple[Any, Any, Any, Any]:
    """``(policy, tokenizer, ref_model or None, peft_config or None)`` for a trainer."""
    model = load_model(spec)
    tokenizer = load_tokenizer(spec)
    ref = load_model(spec, spec.ref_model) if spec.ref_model else None
    return model, tokenizer, ref, lora_config(spec)
