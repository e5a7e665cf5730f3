"""``multidom baseline``: precompute the baseline cloud of an online config as its own job (DESIGN.md §8).

Usage (one process, or every GPU with ``torchrun`` / ``accelerate launch``; each rank samples its share of
the prompts, seeded per prompt, so the result does not depend on the number of processes)::

    multidom baseline --config configs/hh_rlhf_online.yaml --output data/hh_baseline.jsonl
    torchrun --nproc_per_node 8 -m multidom baseline --config configs/hh_rlhf_online.yaml --output data/hh_baseline.jsonl

It reads the config's ``model`` (its ``ref_model`` when set: the baseline is the reference's), ``data``,
``rewards`` and ``training`` (sampling settings, ``baseline_samples``, ``seed``, ``use_vllm``), samples
``baseline_samples`` completions per prompt -- through vLLM when ``training.use_vllm`` is true and vLLM is
installed, else HF ``generate`` -- scores them with the reward bank and writes the prompt rows with their
``baseline_rewards`` column (a list of ``d``-vectors per row) to ``--output`` (``.jsonl`` or ``.parquet``), plus ``<output>.key.json`` (what the points depend on). Train on it with::

    multidom train --config configs/hh_rlhf_online.yaml data.path=data/hh_baseline.jsonl data.prompt_column=prompt \\
        training.baseline_source=column
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from multidom.keys import ConfigError

__all__ = ["run_baseline", "BASELINE_FORMATS"]

BASELINE_FORMATS = (".jsonl", ".parquet")


def run_baseline(config: Mapping[str, Any], *, output: str, say: Any = print) -> dict[str, Any]:
    """Sample, score and write the baseline of an online ``config`` (a ``trainer: online`` mapping without
    ``trainer``); returns a JSON-able summary. Every rank must call it."""
    from multidom.app.recipes import plan

    out = Path(output)
    if out.suffix not in BASELINE_FORMATS:
        raise ConfigError(f"--output must end in one of {', '.join(BASELINE_FORMATS)}, got {out.name!r}")
    config = dict(config)
    training = dict(config.get("training") or {})
    if training.get("baseline_source", "reference") != "reference":
        raise ConfigError("multidom baseline samples the reference: the config's training.baseline_source must be "
                          f"'reference' (got {training['baseline_source']!r})")
    config["training"] = training
    p = plan("online", config, str(out.parent / f".{out.stem}_run"))
    args = p.args
    device = args.device  # initialises torch.distributed under torchrun / accelerate launch
    from multidom.lm.loading import load_model, load_tokenizer
    from multidom.trainers.distributed import world
    from multidom.trainers.online_baseline import as_bank, baseline_key, baseline_rows
    from reward_models import RewardBank

    data = p.recipe.load(p.data, None)
    bank = as_bank(RewardBank(p.rewards, device=str(device)))
    tokenizer = load_tokenizer(p.model)
    model_path = p.model.ref_model or p.model.name_or_path
    model = load_model(p.model, model_path)
    sampler, engine = _vllm_sampler(args, model_path, tokenizer, say)
    if sampler is None:
        model.to(device)
    rank, size = world()
    written = {}
    for split, dataset in (("train", data["train"]), ("eval", data.get("eval"))):
        if dataset is None:
            continue
        rows = baseline_rows(dataset, args, bank, model=model, tokenizer=tokenizer, sampler=sampler, engine=engine,
                             progress=rank == 0)
        from multidom.lm.generation import prompt_key

        dataset = dataset.add_column(args.baseline_rewards_column, [rows[prompt_key(q)] for q in dataset["prompt"]])
        path = out if split == "train" else out.with_name(f"{out.stem}_eval{out.suffix}")
        if rank == 0:
            _write(dataset, path)
        written[split] = str(path)
    key = baseline_key(args, bank, model, engine)
    if rank == 0:
        Path(f"{out}.key.json").write_text(json.dumps(key, indent=2, default=str) + "\n")
    return {"outputs": written, "world_size": size, "engine": engine, "attributes": list(bank.names),
            "prompts": len(data["train"]), "samples_per_prompt": int(args.baseline_samples)}


def _vllm_sampler(args: Any, model_path: str, tokenizer: Any, say: Any) -> tuple[Any, str]:
    """A vLLM sampler when the config asks for vLLM and it is installed; ``(None, "hf")`` otherwise."""
    from multidom.lm.vllm_sampling import vllm_available

    if not getattr(args, "use_vllm", False):
        return None, "hf"
    if not vllm_available():
        say("training.use_vllm is set but vLLM is not installed: sampling with HF generate")
        return None, "hf"
    from vllm import LLM

    from multidom.lm.generation import Sampling
    from multidom.lm.vllm_sampling import generate_vllm

    llm = LLM(model=model_path, seed=int(args.seed), tensor_parallel_size=1,
              gpu_memory_utilization=float(getattr(args, "vllm_gpu_memory_utilization", 0.9)),
              max_model_len=getattr(args, "vllm_max_model_length", None), enable_prefix_caching=True)
    sampling = Sampling.from_trl(args)

    def sampler(prompts: list) -> tuple[list, list]:
        if not prompts:
            return [], []
        gens = generate_vllm(llm, tokenizer, prompts, int(args.baseline_samples), sampling=sampling, seed=int(args.seed))
        return gens.completions, [[t.tolist() for t in row] for row in gens.completion_ids]

    return sampler, "vllm"


def _write(dataset: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        dataset.to_parquet(str(tmp))
    else:
        dataset.to_json(str(tmp), lines=True, force_ascii=False)
    tmp.replace(path)
