"""(c) Two processes (torch.distributed, gloo, CPU) with global-batch AOT equal one process on the
concatenated batch: same loss and same parameters after an SGD step."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from aot_tiny import preference_rows, tiny_model, tiny_tokenizer
from datasets import Dataset

from multidom.trainers.aot import AOTConfig, AOTTrainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out_dir: str, per_device: int, accumulation: int, ddp_backend: str | None = None) -> tuple[float, dict]:
    torch.set_num_threads(1)
    model = tiny_model(seed=4)
    args = AOTConfig(output_dir=out_dir, per_device_train_batch_size=per_device,
                     gradient_accumulation_steps=accumulation, max_steps=1, beta=1.0, learning_rate=0.5, optim="sgd",
                     max_grad_norm=0.0, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                     use_cpu=True, max_length=64, ddp_backend=ddp_backend, global_batch=True)
    tr = AOTTrainer(model, args, processing_class=tiny_tokenizer(), train_dataset=Dataset.from_dict(preference_rows(8)))
    with torch.no_grad():  # start away from the reference
        torch.manual_seed(5)
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    tr.train()
    return tr.state.log_history[0]["loss"], {n: p.detach().clone() for n, p in model.named_parameters()}


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1")
    loss, params = _train(os.path.join(out, "run"), per_device=2, accumulation=2, ddp_backend="gloo")
    torch.save({"loss": loss, "params": params}, os.path.join(out, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    loss1, params1 = _train(str(tmp_path / "single"), per_device=8, accumulation=1)
    for r in ranks:
        assert r["loss"] == pytest.approx(loss1, rel=1e-5)
        for n, p in params1.items():
            torch.testing.assert_close(r["params"][n], p, rtol=1e-5, atol=1e-6, msg=n)
    start = tiny_model(seed=4)
    moved = max(float((params1[n] - q.detach()).abs().max()) for n, q in start.named_parameters())
    assert moved > 1e-3  # the step did something (lr 0.5, SGD)
