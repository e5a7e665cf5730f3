"""The sharded-reference code path under FSDP2 (``fully_shard``), two gloo processes on the CPU.

accelerate does not turn FSDP on for the CPU (DESIGN.md §8), so the reference is sharded here with torch's own
``fully_shard`` -- what TRL's ``prepare_fsdp`` calls for FSDP2 -- and run through multidom's code: the AOT
trainer's ``precompute_ref_log_probs`` (each rank scores its share of an odd number of rows, padded so both
ranks run the same number of collective forward passes) and the online trainer's baseline sampling (ranks
with different numbers of prompts and of generated tokens, kept in step by ``synced_gpus``). Both must give
what the unsharded model gives in one process. Each worker asserts the world size and that the weights are
really sharded.
"""
from __future__ import annotations

import copy
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow
PROMPTS = ["hello how are you", "what is the weather", "is it a nice day", "why are you sad", "are you happy"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard(model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _local_fraction(model: torch.nn.Module) -> float:
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    full = sum(p.numel() for p in model.parameters())
    return local / full


def _ref_logps(out: str) -> tuple[list, list]:
    from aot_tiny import preference_rows, tiny_model, tiny_tokenizer
    from datasets import Dataset

    from multidom.lm.logprobs import sequence_logps
    from multidom.trainers.aot import AOTConfig, AOTTrainer

    data = Dataset.from_dict(preference_rows(7))
    plain = tiny_model(seed=2).eval()
    sharded = _shard(copy.deepcopy(plain))
    assert _local_fraction(sharded) < 0.75  # really sharded over the two ranks
    args = AOTConfig(output_dir=out, per_device_train_batch_size=2, per_device_eval_batch_size=2, max_steps=1,
                     use_cpu=True, report_to="none", save_strategy="no", max_length=64, precompute_ref_log_probs=True,
                     ddp_backend="gloo")
    trainer = AOTTrainer(tiny_model(seed=3), args, ref_model=sharded, processing_class=tiny_tokenizer(),
                         train_dataset=data)
    got = list(trainer.train_dataset["ref_logps"])
    with torch.no_grad():  # the unsharded reference, one row at a time, in this process alone
        want = [sequence_logps(plain, trainer.data_collator([trainer.train_dataset[i]]), 2)[0].tolist()
                for i in range(len(data))]
    return got, want


def _baseline(path: str) -> tuple[dict, dict]:
    from datasets import Dataset
    from lm_tiny import chat, load

    from multidom.trainers.online import OnlineDominanceConfig
    from multidom.trainers.online_baseline import Scorer, baseline_rows, sample_reference, score_rows

    plain, tok = load(path)
    plain.eval()
    sharded = _shard(copy.deepcopy(plain))
    scorer = Scorer(lambda p, c, **_: [[float(len(x[-1]["content"].split())), float("day" in x[-1]["content"])]
                                       for x in c], ["words", "day"])
    cfg = OnlineDominanceConfig(output_dir="/tmp/unused", use_cpu=True, num_generations=2, baseline_samples=3,
                                max_completion_length=8, temperature=0.9, report_to="none", seed=7,
                                per_device_train_batch_size=2)
    data = Dataset.from_dict({"prompt": chat(PROMPTS)})
    got = baseline_rows(data, cfg, scorer, model=sharded, tokenizer=tok, progress=False)
    comps, ids = sample_reference(plain, tok, list(data["prompt"]), cfg, seed=7, sync=False)  # one process
    from multidom.lm.generation import prompt_key

    want = {prompt_key(p): r for p, r in zip(data["prompt"], score_rows(scorer, list(data["prompt"]), comps, ids, {}))}
    return got, want


def _worker(rank: int, world_size: int, port: int, out: str, lm: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = {"world_size": dist.get_world_size()}
        result["ref_got"], result["ref_want"] = _ref_logps(os.path.join(out, "aot"))
        result["base_got"], result["base_want"] = _baseline(lm)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
            json.dump(result, fh)
    finally:
        dist.destroy_process_group()


def test_fsdp2_sharded_reference_equals_unsharded(tmp_path):
    from lm_tiny import save_tiny_lm

    lm = save_tiny_lm(tmp_path / "lm")
    mp.spawn(_worker, args=(2, _port(), str(tmp_path), str(lm)), nprocs=2, join=True)
    for rank in range(2):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["world_size"] == 2
        torch.testing.assert_close(torch.tensor(r["ref_got"]), torch.tensor(r["ref_want"]), rtol=1e-5, atol=1e-5)
        assert len(r["ref_got"]) == 7 and len({round(x[0], 4) for x in r["ref_got"]}) > 3
        assert sorted(r["base_got"]) == sorted(r["base_want"])
        for k, pts in r["base_want"].items():
            assert r["base_got"][k] == pts, k
        assert len({p[0] for pts in r["base_want"].values() for p in pts}) > 2  # real samples of several lengths
