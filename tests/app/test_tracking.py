"""wandb handling of :mod:`multidom.trainers.tracking` when several runs share one Python process (a notebook,
the test session): each run's offline files land under its own output directory, and a training's run
is finished when the training ends, interrupted or not."""
import time
from pathlib import Path

import pytest
import torch
import wandb
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from multidom.trainers.tracking import configure_wandb, wandb_scope


@pytest.fixture(autouse=True)
def _restore_wandb_env(monkeypatch):
    """configure_wandb writes os.environ; restore it (and leave no run open) after each test."""
    for name in ("WANDB_DIR", "WANDB_SILENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield
    if wandb.run is not None:
        wandb.finish()


def _runs(output_dir: Path) -> list[Path]:
    return sorted(output_dir.glob("wandb/offline-run-*/run-*.wandb"))


def _has_key(run_file: Path, key: bytes, wait_s: float = 20.0) -> bool:
    """Whether the metric ``key`` is in an offline ``run-*.wandb`` file (protobuf records keep names as
    UTF-8); wandb's service writes the file a moment after ``finish()`` returns, so poll."""
    deadline = time.monotonic() + wait_s
    while key not in run_file.read_bytes():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


class _Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(2, 1)

    def forward(self, x, y):
        return {"loss": torch.nn.functional.mse_loss(self.w(x).squeeze(-1), y)}


class _CtrlCAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_log(self, args, state, control, **kwargs):  # after the step's loss reached wandb
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _train(output_dir: Path, steps: int = 2, callbacks=()) -> None:
    """A tiny Trainer run that reports to wandb the way the multidom trainers do (through transformers'
    WandbCallback, whose ``wandb.init`` gets no ``dir=``)."""
    torch.manual_seed(0)
    data = Dataset.from_dict({"x": torch.randn(8, 2).tolist(), "y": torch.randn(8).tolist()}).with_format("torch")
    args = TrainingArguments(output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=4,
                             logging_steps=1, save_strategy="no", report_to="wandb", run_name=output_dir.name,
                             use_cpu=True, disable_tqdm=True)
    Trainer(model=_Regression(), args=args, train_dataset=data, callbacks=list(callbacks)).train()


def test_configure_wandb_moves_runs_started_without_dir(tmp_path):
    """wandb reads WANDB_DIR once per process; configure_wandb must move the next ``wandb.init()`` anyway."""
    for name in ("a", "b"):
        configure_wandb(tmp_path / name)
        run = wandb.init(project="multidom-test", name=name)  # no dir=, like transformers' WandbCallback
        assert Path(run.dir).is_relative_to(tmp_path / name / "wandb"), (name, run.dir)
        run.log({"probe/value": 1.0})
        run.finish()
    assert len(_runs(tmp_path / "a")) == 1 and len(_runs(tmp_path / "b")) == 1
    assert _has_key(_runs(tmp_path / "b")[0], b"probe/value")


def test_two_trainings_in_one_process_each_under_its_own_output_dir(tmp_path):
    for name in ("first", "second"):
        with wandb_scope(tmp_path / name) as mode:
            assert mode == "offline"
            _train(tmp_path / name)
        assert wandb.run is None  # the run the Trainer left open is finished with the training
    for name in ("first", "second"):
        runs = _runs(tmp_path / name)
        assert len(runs) == 1, (name, runs)
        assert _has_key(runs[0], b"train/loss")
    assert not (tmp_path / "wandb").exists()


def test_interrupted_training_is_finished_and_the_next_one_gets_its_own_run(tmp_path):
    with pytest.raises(KeyboardInterrupt), wandb_scope(tmp_path / "cut"):
        _train(tmp_path / "cut", steps=3, callbacks=[_CtrlCAt(1)])
    assert wandb.run is None
    with wandb_scope(tmp_path / "next"):
        _train(tmp_path / "next")
    assert len(_runs(tmp_path / "cut")) == 1 and len(_runs(tmp_path / "next")) == 1
    assert _has_key(_runs(tmp_path / "cut")[0], b"train/loss")  # step 1 was logged
    assert _has_key(_runs(tmp_path / "next")[0], b"train/loss")


def test_a_run_opened_by_the_caller_receives_the_training_and_stays_open(tmp_path):
    mine = wandb.init(project="multidom-test", name="mine", dir=str(tmp_path / "mine"))
    with wandb_scope(tmp_path / "train"):
        _train(tmp_path / "train")
    assert wandb.run is mine  # not finished by the scope: the caller owns it
    mine.finish()
    assert not _runs(tmp_path / "train")
    assert _has_key(_runs(tmp_path / "mine")[0], b"train/loss")
