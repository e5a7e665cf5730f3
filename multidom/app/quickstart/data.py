"""Chatterbot-corpus conversations as (prompt, response) pairs, with held-out prompts kept aside.

The ``chatterbot-corpus`` package ships YAML files of short English conversations (lists of
utterances). Following ChatterBot's own convention, every utterance is a response to the one
before it, so a conversation ``[u0, u1, u2]`` gives the pairs ``(u0, u1)`` and ``(u1, u2)``
(about 2,400 pairs, 1,250 distinct). Code blocks and very long answers are dropped so a tiny model
with a short context can learn the rest.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["ChatPair", "corpus_dir", "load_chatterbot_pairs", "split_by_prompt"]


@dataclass(frozen=True)
class ChatPair:
    """One exchange: the user's ``prompt`` and the bot's ``response`` (plain strings)."""

    prompt: str
    response: str


def corpus_dir(language: str = "english") -> Path:
    """Directory of the installed chatterbot-corpus YAML files for ``language``."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the quickstart needs the chatterbot corpus: pip install chatterbot-corpus "
            "(or pip install 'multidom[quickstart]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / language
    if not path.is_dir():
        raise FileNotFoundError(f"no chatterbot corpus for language {language!r} under {path.parent}")
    return path


def load_chatterbot_pairs(
    language: str = "english", *, max_prompt_words: int = 20, max_response_words: int = 24
) -> list[ChatPair]:
    """All distinct (prompt, response) pairs of the corpus, in a stable order.

    A pair is kept when both sides have at least two characters, the prompt has at most
    ``max_prompt_words`` words, the response at most ``max_response_words``, and neither contains
    a code block. Whitespace inside an utterance is collapsed to single spaces.
    """
    pairs: dict[ChatPair, None] = {}
    for file in sorted(corpus_dir(language).glob("*.yml")):
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for conversation in doc.get("conversations") or []:
            turns = [" ".join(str(t).split()) for t in conversation]
            for prompt, response in zip(turns, turns[1:]):
                if _keep(prompt, max_prompt_words) and _keep(response, max_response_words):
                    pairs.setdefault(ChatPair(prompt, response))
    if not pairs:
        raise ValueError(f"no usable chatterbot pairs for language {language!r}")
    return list(pairs)


def _keep(text: str, max_words: int) -> bool:
    return len(text) >= 2 and "```" not in text and len(text.split()) <= max_words


def split_by_prompt(
    pairs: list[ChatPair], *, eval_fraction: float, seed: int = 0
) -> tuple[list[ChatPair], list[str]]:
    """Split by *prompt*, so no held-out prompt is ever seen in training.

    A prompt is held out when a seeded hash of its lower-cased text falls below ``eval_fraction``
    (stable across runs and machines, independent of file order). Returns the training pairs and
    the sorted list of distinct held-out prompts.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")

    def held_out(prompt: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{prompt.lower()}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction

    train = [p for p in pairs if not held_out(p.prompt)]
    held = sorted({p.prompt for p in pairs if held_out(p.prompt)})
    if not train or not held:
        raise ValueError(f"eval_fraction={eval_fraction} leaves an empty train or held-out split")
    return train, held
