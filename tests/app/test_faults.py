"""Fault injection through the real CLI in a child process: SIGINT, SIGTERM and kill -9 during a save, a full
disk (a failing write), missing / truncated / torn checkpoint files, a rerun into a used output directory, and
Ctrl-C with foreign ``checkpoint-*`` folders below the output directory. Each loses nothing, resumes from the
last complete checkpoint, and the resumed run's weights equal an uninterrupted run's (online trainer, toy task;
AOT and offline resume equality: tests/trainers/test_aot_training.py, tests/app/test_recipes.py).

The fault is raised from inside ``Trainer._save_rng_state`` -- after the weights and the optimizer are written,
before ``trainer_state.json`` -- by a real signal sent to the process itself (or a raised ``ENOSPC``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from multidom.app.toy import build_toy_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STEPS = 4

CHILD = r'''
import errno, os, signal, sys, time
import transformers
fault, at = os.environ.get("FAULT", ""), int(os.environ.get("FAULT_STEP", "0"))
original = transformers.Trainer._save_rng_state
def faulty(self, output_dir):
    if self.state.global_step == at:
        if fault in ("sigint", "sigterm"):
            os.kill(os.getpid(), signal.SIGINT if fault == "sigint" else signal.SIGTERM)
            time.sleep(5)  # the handler raises here, in the middle of the save
        elif fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "disk":
            raise OSError(errno.ENOSPC, "No space left on device", output_dir)
    return original(self, output_dir)
transformers.Trainer._save_rng_state = faulty
from multidom.app.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    model = build_toy_model(root / "model")
    cfg = yaml.safe_load((REPO / "configs" / "online_toy.yaml").read_text())
    cfg["model"] = str(model)
    cfg["training"].update(max_steps=STEPS, save_steps=1, logging_steps=1, report_to="none", plot_steps=0,
                           all_estimators_steps=0, per_device_train_batch_size=16, baseline_samples=2)
    config = root / "toy.yaml"
    config.write_text(yaml.safe_dump(cfg))
    child = root / "child.py"
    child.write_text(CHILD)
    reference = run(root, child, config, root / "uninterrupted")
    assert reference.returncode == 0, reference.stderr[-2000:]
    return {"root": root, "child": child, "config": config, "final": weights(root / "uninterrupted" / "final")}


def run(root: Path, child: Path, config: Path, out: Path, *extra: str, fault: str = "", at: int = 0):
    env = {**os.environ, "FAULT": fault, "FAULT_STEP": str(at), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, str(child), "train", "--config", str(config), "--output-dir", str(out),
                           *extra], capture_output=True, text=True, env=env, timeout=600, cwd=root)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def metric_steps(out: Path) -> list[int]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


@pytest.mark.parametrize("fault, code, word", [("sigint", 130, "interrupted"), ("sigterm", 143, "terminated"),
                                               ("kill", -signal.SIGKILL, None), ("disk", 1, "No space left")])
def test_fault_during_a_save_loses_nothing_and_resumes_equal(setup, tmp_path, fault, code, word):
    out = tmp_path / "run"
    cut = run(setup["root"], setup["child"], setup["config"], out, fault=fault, at=3)
    assert cut.returncode == code, cut.stderr[-2000:]
    if word:
        assert word in cut.stderr and "Traceback" not in cut.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not (out / "final").exists()
    resumed = run(setup["root"], setup["child"], setup["config"], out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "checkpoint-2" in resumed.stdout
    assert list(out.glob("incomplete-*")), "the half-written save was set aside, not deleted"
    assert_same_weights(weights(out / "final"), setup["final"])
    assert metric_steps(out) == list(range(1, STEPS + 1))  # one history: the replayed rows were dropped


@pytest.mark.parametrize("damage", ["missing_optimizer", "truncated_weights", "torn_weights", "no_manifest"])
def test_damaged_newest_checkpoint_is_set_aside(setup, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(setup["root"] / "uninterrupted", out)
    newest = out / f"checkpoint-{STEPS}"
    target = newest / "model.safetensors"
    if damage == "missing_optimizer":
        (newest / "optimizer.pt").unlink()
    elif damage == "truncated_weights":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif damage == "torn_weights":  # same size, back half zeroed
        data = bytearray(target.read_bytes())
        data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
        target.write_bytes(bytes(data))
    else:
        (newest / "multidom_manifest.json").unlink()
    resumed = run(setup["root"], setup["child"], setup["config"], out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"checkpoint-{STEPS - 1}" in resumed.stdout.split("resuming from")[1].splitlines()[0]
    assert (out / f"incomplete-checkpoint-{STEPS}").is_dir()
    assert_same_weights(weights(out / "final"), setup["final"])


def test_rerun_into_a_used_output_dir_is_refused_then_overwritten(setup, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(setup["root"] / "uninterrupted", out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run(setup["root"], setup["child"], setup["config"], out)
    assert again.returncode == 1 and "already holds a run" in again.stderr and "--overwrite" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    replaced = run(setup["root"], setup["child"], setup["config"], out, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert metric_steps(out) == list(range(1, STEPS + 1))  # not two runs mixed
    assert_same_weights(weights(out / "final"), setup["final"])  # same config and seed: identical weights


def test_interrupt_leaves_foreign_checkpoint_folders_alone(setup, tmp_path):
    out = tmp_path / "shared"
    foreign = out / "lora_exports" / "checkpoint-100"
    foreign.mkdir(parents=True)
    (foreign / "adapter.bin").write_bytes(b"x" * 10)
    cut = run(setup["root"], setup["child"], setup["config"], out, fault="sigint", at=2)
    assert cut.returncode == 130, cut.stderr[-2000:]
    assert foreign.is_dir() and (foreign / "adapter.bin").read_bytes() == b"x" * 10
    assert not (out / "lora_exports" / "incomplete-checkpoint-100").exists()
