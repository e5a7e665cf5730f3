"""Baseline sampling through vLLM (optional: ``pip install vllm``; the import is guarded).

Each completion is its own request with its own seed (:func:`multidom.lm.seeded.sequence_seed` of the run
seed, the prompt and ``g``), so the samples do not depend on how prompts are sharded over processes --
the same contract as :func:`multidom.lm.generation.generate` with ``per_prompt_seeds`` (the two engines do
not give the same samples; the baseline cache key names the engine). Prompts are formatted as TRL formats
them (:func:`multidom.lm.generation.encode_prompt`), sampling settings are TRL's (``Sampling.from_trl``).
"""
from __future__ import annotations

from typing import Any, Sequence

from multidom.lm.generation import Generations, Sampling, encode_prompt, is_conversational, prompt_key
from multidom.lm.seeded import sequence_seed

__all__ = ["vllm_available", "generate_vllm"]


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # not installed, or no GPU build
        return False
    return True


def generate_vllm(llm: Any, tokenizer: Any, prompts: Sequence[Any], G: int, *, sampling: Sampling, seed: int
                  ) -> Generations:
    """``G`` completions per prompt from a ``vllm.LLM``; returns :class:`~multidom.lm.generation.Generations`."""
    import torch
    from vllm import SamplingParams

    encoded = [encode_prompt(tokenizer, p, sampling.chat_template_kwargs) for p in prompts]
    requests, params = [], []
    for p, ids in zip(prompts, encoded):
        for g in range(G):
            requests.append({"prompt_token_ids": ids.tolist()})
            params.append(SamplingParams(
                n=1, seed=sequence_seed(seed, prompt_key(p), g) % (2**31), temperature=sampling.temperature,
                top_p=sampling.top_p, top_k=sampling.top_k or -1, min_p=sampling.min_p or 0.0,
                repetition_penalty=sampling.repetition_penalty, max_tokens=sampling.max_new_tokens,
                **dict(sampling.generation_kwargs)))
    outputs = llm.generate(requests, sampling_params=params, use_tqdm=False)
    completions, completion_ids = [], []
    for i, p in enumerate(prompts):
        outs = [o.outputs[0] for o in outputs[i * G:(i + 1) * G]]
        completion_ids.append([torch.tensor(list(o.token_ids), dtype=torch.long) for o in outs])
        texts = [tokenizer.decode(list(o.token_ids), skip_special_tokens=True) for o in outs]
        completions.append([[{"role": "assistant", "content": t}] for t in texts] if is_conversational(p) else texts)
    return Generations(list(prompts), completions, encoded, completion_ids)
