"""Shared test helpers for behaviour tests of the trainers (issue 15): saved weights, metrics rows, the optimizer
steps a run executed in this process, and two real processes through ``torchrun`` (gloo)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import yaml


def weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The ``model.safetensors`` tensors saved in ``folder``."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=atol, msg=name)


def moved(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute change of any parameter between two state dicts."""
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if k in b)


def metric_rows(folder: str | Path) -> list[dict]:
    """The rows of ``<folder>/metrics.jsonl``."""
    return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def per_step(folder: str | Path, key: str) -> dict[int, float]:
    """``{step: value}`` of one training metric (evaluation rows left out)."""
    return {r["step"]: r[key] for r in metric_rows(folder) if key in r and not any(k.startswith("eval") for k in r)}


class StepRecorder:
    """Set as ``JsonlMetrics.on_step_end`` (a class attribute, so it is not bound): records the global step of
    every optimizer step this process executes, so a resumed run shows which steps it really ran."""

    def __init__(self):
        self.steps: list[int] = []

    def __call__(self, args, state, control, **kwargs):
        self.steps.append(int(state.global_step))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multidom_train(nproc: int, config: dict, out: Path, *, script: str | None = None) -> str:
    """``multidom train`` in a subprocess; with ``nproc > 1`` under ``torchrun --nproc_per_node nproc`` (gloo: two
    real processes on this machine, unlike ``accelerate launch --cpu``). ``script``: a file that runs the CLI
    (after patching something) instead of ``-m multidom``. Returns stdout."""
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    args = [*([script] if script else ["-m", "multidom"]), "train", "--config", str(path), "--output-dir", str(out)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(free_port()), *args]
    else:
        cmd = [sys.executable, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def world_size_of(folder: str | Path) -> int:
    """The world size a run trained with, from the ``training_args.bin`` that ``Trainer.save_model`` wrote."""
    args = torch.load(Path(folder) / "training_args.bin", weights_only=False)
    return int(args.world_size)
