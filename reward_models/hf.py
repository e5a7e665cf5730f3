"""``hf_classifier``: a Hugging Face ``AutoModelForSequenceClassification`` reward model (DESIGN.md §4, §7).

The score of head ``j`` is ``act(logits(x, y))_j`` where ``logits`` is the classifier's output on the
(prompt, completion) pair and ``act`` is ``identity`` (default: the raw reward logit, as trained by a
Bradley-Terry loss), ``sigmoid`` or ``softmax`` (a class probability).

Input text: the format the reward model was trained on, chosen by ``template`` (table :data:`TEMPLATES`),
always from the **whole** conversation (every turn of a conversational prompt, not only the last user turn):

* ``chat`` -- the tokenizer's chat template on the conversation plus the completion as the assistant turn,
  tokenised without extra special tokens (default when the tokenizer has a chat template);
* ``pair`` -- the tokenizer's pair encoding of ``(prompt text, completion text)`` (``[CLS] x [SEP] y [SEP]`` for
  BERT-style models; default otherwise); a conversation's turns are joined by newlines;
* ``hh`` -- Anthropic HH-RLHF's ``"\n\nHuman: ...\n\nAssistant: ..."``, every turn, then the pair
  ``(conversation + "\n\nAssistant:", completion)`` as the HH reward models' cards feed it (e.g.
  ``Ray2333/gpt2-large-harmless-reward_model``; GPT-2 tokenizers have no chat template).

Heads: ``head=j`` (index or label) gives one attribute named ``name``; ``heads=[...]`` or ``heads="all"`` give
one attribute per head, named ``<name>/<label>`` (HelpSteer-style multi-attribute reward models).
Remote code never runs unless ``trust_remote_code=True`` is given for this model.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from reward_models.base import (
    RewardModel,
    Score,
    Text,
    as_messages,
    check_batch,
    completion_text,
)
from reward_models.registry import register

__all__ = ["HFClassifierReward", "TEMPLATES"]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: z.softmax(dim=-1),
}


def _turns(prompt: Text, completion: Text) -> list[dict[str, Any]]:
    """The whole conversation: the prompt's messages (a string is one user turn), then the completion's."""
    return as_messages(prompt, "user") + as_messages(completion, "assistant")


def _chat(tok: Any, prompt: Text, completion: Text) -> tuple[str, str | None]:
    return tok.apply_chat_template(_turns(prompt, completion), tokenize=False), None


def _pair(tok: Any, prompt: Text, completion: Text) -> tuple[str, str | None]:
    text = prompt if isinstance(prompt, str) else "\n".join(completion_text([m]) for m in prompt)
    return text, completion_text(completion)


_HH_ROLES = {"user": "\n\nHuman: ", "assistant": "\n\nAssistant: "}


def _hh(tok: Any, prompt: Text, completion: Text) -> tuple[str, str | None]:
    turns = as_messages(prompt, "user")
    text = "".join(_HH_ROLES.get(m.get("role"), "") + completion_text([m]) for m in turns)
    return text + "\n\nAssistant:", " " + completion_text(completion).lstrip()


#: ``template`` name -> ``(tokenizer, prompt, completion) -> (text, text pair or None)``.
TEMPLATES: dict[str, Callable[[Any, Text, Text], tuple[str, str | None]]] = {"chat": _chat, "pair": _pair, "hh": _hh}


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"hf_classifier: unknown dtype {dtype!r} (e.g. 'float32', 'bfloat16')")
    return value


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or os.sep in model.replace("/", "")


def _load(model: str, name: str, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = os.path.expanduser(model)
    if not os.path.isdir(path) and _looks_like_path(model):
        raise FileNotFoundError(
            f"reward model {name!r}: no model directory at {model!r}; pass model= a local directory holding "
            "config.json and the weights, or a hub id"
        )
    src = path if os.path.isdir(path) else model
    tok_kwargs = {k: v for k, v in kwargs.items() if k in ("revision", "trust_remote_code")}
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **tok_kwargs)
        net = AutoModelForSequenceClassification.from_pretrained(src, **kwargs)
    except OSError as err:
        raise OSError(
            f"reward model {name!r}: could not load {model!r} ({err}). The hub may be unreachable or offline "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}): download it once, e.g. "
            f"`hf download {model} --local-dir DIR`, and pass the local path: model: DIR"
        ) from err
    return tokenizer, net


@register("hf_classifier", description="a Hugging Face sequence-classification reward model (hub id or local dir)")
class HFClassifierReward(RewardModel):
    """Sequence-classification reward model; one head (``head``) or one attribute per head (``heads``).

    Args:
        model: local directory or hub id.
        head: index or label of the head to use (single attribute ``name``); default 0 for one-logit models.
        heads: list of indices/labels, or ``"all"``: one attribute ``<name>/<label>`` per head.
        activation: ``identity`` (raw logits), ``sigmoid`` or ``softmax``.
        batch_size: texts per forward pass.
        max_length: truncation length in tokens.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
        dtype: e.g. ``"bfloat16"``; default the checkpoint's.
        template: the input format, a name of :data:`TEMPLATES` (``chat``, ``pair``, ``hh``); default ``chat``
            when the tokenizer has a chat template, else ``pair``.
        chat_template: older switch: ``True`` is ``template="chat"``, ``False`` is ``template="pair"``.
        trust_remote_code: run the checkpoint's own code (off unless given).
        revision: hub revision.
    """

    def __init__(
        self,
        model: str,
        *,
        head: int | str | None = None,
        heads: Sequence[int | str] | str | None = None,
        name: str | None = None,
        higher_is_better: bool = True,
        activation: str = "identity",
        batch_size: int = 16,
        max_length: int = 1024,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        template: str | None = None,
        chat_template: bool | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ) -> None:
        name = name or os.path.basename(os.path.normpath(str(model))) or "hf_classifier"
        super().__init__(name, higher_is_better=higher_is_better, description=f"sequence classifier {model}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"reward model {name!r}: unknown activation {activation!r}; choose from {list(_ACTIVATIONS)}")
        if head is not None and heads is not None:
            raise ValueError(f"reward model {name!r}: pass head= or heads=, not both")
        if not isinstance(trust_remote_code, bool):  # bool("false") is True: a quoted string must not turn it on
            raise ValueError(f"reward model {name!r}: trust_remote_code must be true or false (a YAML boolean), "
                             f"got {trust_remote_code!r}")
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if revision is not None:
            kwargs["revision"] = revision
        if dtype is not None:
            kwargs["dtype"] = _dtype(dtype)
        self.tokenizer, self.net = _load(str(model), name, **kwargs)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net.to(self.device).eval().requires_grad_(False)
        self._setup_padding()
        id2label = {int(k): str(v) for k, v in self.net.config.id2label.items()}
        self.all_labels = [id2label.get(j, f"LABEL_{j}") for j in range(self.net.config.num_labels)]
        if heads is None:
            if head is None and len(self.all_labels) > 1:
                raise ValueError(
                    f"reward model {name!r}: {model!r} has {len(self.all_labels)} heads {self.all_labels}; "
                    "choose one with head= or several with heads= (or heads='all')"
                )
            self.head_index = [self._index(0 if head is None else head)]
        else:
            chosen = list(range(len(self.all_labels))) if heads == "all" else [self._index(h) for h in heads]
            if not chosen:
                raise ValueError(f"reward model {name!r}: heads= is empty")
            self.head_index = chosen
            self.labels = tuple(self.all_labels[j] for j in chosen)
        self.activation = _ACTIVATIONS[activation]
        self.batch_size, self.max_length = batch_size, max_length
        has_template = getattr(self.tokenizer, "chat_template", None) is not None
        if chat_template is not None:
            if template is not None:
                raise ValueError(f"reward model {name!r}: pass template= or chat_template=, not both")
            template = "chat" if chat_template else "pair"
        template = template or ("chat" if has_template else "pair")
        if template not in TEMPLATES:
            raise ValueError(f"reward model {name!r}: unknown template {template!r}; choose from {list(TEMPLATES)}")
        if template == "chat" and not has_template:
            raise ValueError(f"reward model {name!r}: template 'chat' (chat_template=True) but the tokenizer of "
                             f"{model!r} has none (no chat template); use template: pair or hh")
        self.template = template
        self.use_chat_template = template == "chat"

    def _index(self, head: int | str) -> int:
        if isinstance(head, str):
            if head not in self.all_labels:
                raise ValueError(f"reward model {self.name!r}: no head labelled {head!r}; labels: {self.all_labels}")
            return self.all_labels.index(head)
        if not 0 <= int(head) < len(self.all_labels):
            raise ValueError(f"reward model {self.name!r}: head {head} out of range ({len(self.all_labels)} heads)")
        return int(head)

    def _setup_padding(self) -> None:
        tok = self.tokenizer
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ValueError(f"reward model {self.name!r}: the tokenizer has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        if self.net.config.pad_token_id is None:
            self.net.config.pad_token_id = tok.pad_token_id

    def encode(self, prompts: Sequence[Text], completions: Sequence[Text]) -> dict[str, torch.Tensor]:
        """Tokenised batch (on the model's device) exactly as it is fed to the classifier."""
        common = {"padding": True, "truncation": True, "max_length": self.max_length, "return_tensors": "pt"}
        render = TEMPLATES[self.template]
        texts, pairs = zip(*(render(self.tokenizer, p, c) for p, c in zip(prompts, completions)))
        if pairs[0] is None:
            enc = self.tokenizer(list(texts), add_special_tokens=False, **common)
        else:
            enc = self.tokenizer(list(texts), list(pairs), **common)
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def _heads(self, prompts: Sequence[Text], completions: Sequence[Text]) -> torch.Tensor:
        """``(n, h)`` activated logits of the chosen heads, float32 on the CPU."""
        out = []
        for s in range(0, len(completions), self.batch_size):
            logits = self.net(**self.encode(prompts[s:s + self.batch_size], completions[s:s + self.batch_size])).logits
            out.append(self.activation(logits.float())[:, self.head_index].cpu())
        return torch.cat(out)

    def score(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Sequence[Score]]:
        check_batch(f"reward model {self.name!r}", prompts, completions)
        return self._heads(prompts, completions).tolist()

    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        if self.labels:
            return super().__call__(prompts, completions, **columns)  # multi-head: raises, pointing to split()
        check_batch(f"reward model {self.name!r}", prompts, completions)
        return self._heads(prompts, completions)[:, 0].tolist()
