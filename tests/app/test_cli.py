"""The ``multidom`` CLI: error paths (one line, exit != 0, no traceback), ``rewards list``, and an end-to-end
run on a tiny configuration: online training interrupted by Ctrl-C, resumed with ``--resume``, then
``multidom evaluate`` on the result (report files with finite numbers, offline wandb files with the
metric names of STYLE.md §9).
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from lm_tiny import PROMPTS, save_tiny_lm

from multidom.app import cli
from multidom.trainers.tracking import JsonlMetrics, read_metrics

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and line.startswith("multidom: error")]
    assert code != 0
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("cli") / "lm")


def online_config(lm: Path, **training) -> dict:
    return {
        "trainer": "online",
        "model": str(lm),
        "data": {"prompts": PROMPTS},
        "rewards": ["length", {"type": "regex", "pattern": "good|great|nice|happy", "name": "positive"}],
        "dominance": {"estimator": "quantile"},
        "training": {
            "max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 6,
            "baseline_samples": 2, "save_steps": 1, "logging_steps": 1, "report_to": "wandb", "bf16": False,
            "all_estimators_steps": 0, "plot_steps": 0, "learning_rate": 0.05,
            "seed": 0, **training,
        },
    }


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


# ------------------------------------------------------------------------------------ error paths
def test_missing_config_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "nope.yaml")
    assert_one_line_error(code, err, "config file not found", "nope.yaml")


def test_unknown_key_names_the_key_and_suggests(capsys, tmp_path, tiny_lm):
    cfg = write_yaml(tmp_path / "c.yaml", online_config(tiny_lm))
    code, _, err = run_cli(capsys, "train", "--config", cfg, "training.lerning_rate=1e-5", "-o", tmp_path / "o")
    assert_one_line_error(code, err, "'lerning_rate'", "did you mean 'learning_rate'")


def test_unknown_trainer_and_bad_override(capsys, tmp_path, tiny_lm):
    cfg = write_yaml(tmp_path / "c.yaml", {**online_config(tiny_lm), "trainer": "onlin"})
    code, _, err = run_cli(capsys, "train", "--config", cfg, "-o", tmp_path / "o")
    assert_one_line_error(code, err, "unknown trainer 'onlin'", "did you mean 'online'")
    cfg = write_yaml(tmp_path / "d.yaml", online_config(tiny_lm))
    code, _, err = run_cli(capsys, "train", "--config", cfg, "training.max_steps", "-o", tmp_path / "o")
    assert_one_line_error(code, err, "key=value")


def test_unknown_reward_type(capsys, tmp_path, tiny_lm):
    cfg = write_yaml(tmp_path / "c.yaml", online_config(tiny_lm))
    code, _, err = run_cli(capsys, "train", "--config", cfg, "rewards.1.type=regexp", "-o", tmp_path / "o")
    assert_one_line_error(code, err, "unknown reward model 'regexp'", "did you mean 'regex'")
    code, _, err = run_cli(capsys, "evaluate", "--model", f"a={tiny_lm}", "--model", f"b={tiny_lm}",
                           "--prompts", REPO / "pyproject.toml", "--reward", "sentimnt", "-o", tmp_path / "o")
    assert_one_line_error(code, err, "unknown reward model 'sentimnt'", "did you mean 'sentiment'")


def test_model_path_that_does_not_exist(capsys, tmp_path, tiny_lm):
    cfg = write_yaml(tmp_path / "c.yaml", {**online_config(tiny_lm), "model": str(tmp_path / "no_such_model")})
    code, _, err = run_cli(capsys, "train", "--config", cfg, "-o", tmp_path / "o")
    assert_one_line_error(code, err, "path does not exist", "no_such_model")
    code, _, err = run_cli(capsys, "evaluate", "--model", f"a={tiny_lm}", "--model", f"b={tmp_path / 'gone'}",
                           "--prompts", REPO / "pyproject.toml", "--reward", "length", "-o", tmp_path / "o")
    assert_one_line_error(code, err, "path does not exist", "gone")


def test_unreachable_hub_model_says_to_pass_a_local_path(capsys, tmp_path, tiny_lm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = write_yaml(tmp_path / "c.yaml", {**online_config(tiny_lm), "model": "multidom-tests/no-such-model"})
    code, _, err = run_cli(capsys, "train", "--config", cfg, "-o", tmp_path / "o")
    assert_one_line_error(code, err, "local path")


def test_output_dir_not_writable(capsys, tmp_path, tiny_lm):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = write_yaml(tmp_path / "c.yaml", online_config(tiny_lm))
    code, _, err = run_cli(capsys, "train", "--config", cfg, "--output-dir", blocker / "run")
    assert_one_line_error(code, err, "output directory", "not writable")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["train", "--config", str(tmp_path / "nope.yaml"), "--debug"])


def test_python_dash_m_and_console_script(tmp_path):
    """The real processes: ``python -m multidom`` and the ``multidom`` script; stderr is exactly one line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cfg = write_yaml(tmp_path / "c.yaml", {**online_config(tmp_path), "rewards": ["length", {"type": "sentimnt"}]})
    proc = subprocess.run([sys.executable, "-m", "multidom", "train", "--config", str(cfg), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("multidom: error: unknown reward model 'sentimnt'; did you mean 'sentiment'?")
    script = Path(sys.executable).with_name("multidom")
    if script.is_file():  # installed console script (pyproject [project.scripts])
        proc = subprocess.run([str(script), "rewards", "list"], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0 and "sentiment" in proc.stdout


def test_evaluate_a_completions_file(capsys, tmp_path):
    from multidom.evaluation import write_completions

    prompts = ["p1", "p2", "p3"]
    comps = {"short": [["a", "b c"], ["d", "e"], ["f g", "h"]],
             "long": [["a b c d", "a b c d e"], ["a b c", "a b c d"], ["a b c d", "a b c"]]}
    path = write_completions(tmp_path / "c.jsonl", comps, prompts)
    # the hinge cost: eps = 0 exactly when one cloud dominates (its point estimate; its intervals are flagged)
    code, stdout, err = run_cli(capsys, "evaluate", "--completions", path, "--reward", "length",
                                "--reward", "{type: regex, pattern: 'a', name: has_a}",
                                "--n-boot", "20", "--output-dir", tmp_path / "out",
                                "dominance=[{estimator: quantile, cost: hinge}]")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["models"] == ["short", "long"] and report["attributes"] == ["length", "has_a"]
    # every 'long' completion has at least as many words and contains an 'a': long dominates short
    assert report["dominance"]["quantile"]["eps"][1][0] == pytest.approx(0.0, abs=1e-9)
    assert report["dominance"]["quantile"]["relative"]["ranking"] == ["long", "short"]
    assert report["stats"]["long"]["length"]["mean"] == pytest.approx(23 / 6)  # (4 + 5 + 3 + 4 + 4 + 3) / 6
    assert "eps(long ≽ short) [quantile] = 0.000" in stdout
    assert "[quantile] intervals and tests have no error control" in stdout
    # the default spec (logistic cost, calibrated tests) ranks the same way, with eps below 1/2
    code, stdout, err = run_cli(capsys, "evaluate", "--completions", path, "--reward", "length",
                                "--reward", "{type: regex, pattern: 'a', name: has_a}", "--estimator", "quantile",
                                "--n-boot", "20", "--output-dir", tmp_path / "out2")
    assert code == 0, err
    report = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert report["dominance"]["quantile"]["spec"]["cost"] == "logistic"
    assert report["dominance"]["quantile"]["tests_calibrated"] is True
    assert report["dominance"]["quantile"]["eps"][1][0] < 0.1
    assert report["dominance"]["quantile"]["relative"]["ranking"] == ["long", "short"]


# ------------------------------------------------------------------------------------ rewards list
def test_rewards_list_prints_every_registered_model(capsys):
    import reward_models

    code, out, _ = run_cli(capsys, "rewards", "list")
    assert code == 0
    listed = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()
              if line.strip() and "[plug-in failed to load" not in line}
    available = reward_models.available()  # plug-ins (entry points) may come and go while other tests run
    builtins = {"sentiment", "non_offensive", "relevance", "length", "brevity", "hf_classifier", "column",
                "regex", "format", "callable"}
    assert builtins <= set(listed) and builtins <= set(available)
    for name in builtins:
        assert listed[name] == available[name] and available[name]
    assert list(listed) == sorted(listed)


# ------------------------------------------------------------------------------------ config location
def test_default_config_is_found_from_the_checkout(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not from the current directory: from the checkout next to the package
    assert cli.find_default_config() == REPO / "configs" / "quickstart.yaml"
    assert cli.find_default_config("hh_rlhf_online.yaml") == REPO / "configs" / "hh_rlhf_online.yaml"
    assert yaml.safe_load(cli.find_default_config().read_text())["trainer"] == "quickstart"
    with pytest.raises(FileNotFoundError, match="pass --config"):
        cli.find_default_config("no_such.yaml")


# ------------------------------------------------------------------------------------ end to end
class _CtrlCAfter:
    """Raise KeyboardInterrupt at the end of optimizer step ``n`` (as Ctrl-C would, mid-run), leaving a
    ``checkpoint-n`` folder cut short (weights written, no trainer state) as an interrupted save would."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, args, state, control, **kwargs):  # set on the class: not bound, no callback arg
        if state.global_step == self.n:
            cut = Path(args.output_dir) / f"checkpoint-{self.n}"
            cut.mkdir()
            (cut / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_lm):
    """Online run to 4 steps, interrupted by Ctrl-C after step 3 (checkpoint-2 is the last complete one,
    checkpoint-3 was cut short), resumed."""
    root = tmp_path_factory.mktemp("e2e")
    cfg = write_yaml(root / "online.yaml", online_config(tiny_lm, max_steps=4, save_steps=2))
    out = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(JsonlMetrics, "on_step_end", _CtrlCAfter(3), raising=False)
        interrupted = cli.main(["train", "--config", str(cfg), "--output-dir", str(out)])
        after_interrupt = sorted(p.name for p in out.glob("*checkpoint-*"))
        wandb_after_interrupt = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))
    resumed = cli.main(["train", "--config", str(cfg), "--output-dir", str(out), "--resume"])
    return {"out": out, "cfg": cfg, "interrupted": interrupted, "resumed": resumed,
            "after_interrupt": after_interrupt, "wandb_after_interrupt": wandb_after_interrupt}


def _wandb_keys(run_file: Path, wait_s: float = 20.0) -> set[bytes]:
    """Metric names stored in an offline ``run-*.wandb`` file (protobuf records keep keys as UTF-8).

    wandb's service process writes the file asynchronously, a moment after ``finish()`` returns: poll.
    """
    deadline = time.monotonic() + wait_s
    while True:
        keys = set(re.findall(rb"(?:rewards|dominance|eval)/[A-Za-z0-9_./-]+|\bkl\b", run_file.read_bytes()))
        if keys or time.monotonic() > deadline:
            return keys
        time.sleep(0.5)


@pytest.mark.slow
def test_ctrl_c_keeps_checkpoint_and_wandb_then_resume(trained):
    assert trained["interrupted"] == 130
    assert trained["after_interrupt"] == ["checkpoint-2", "incomplete-checkpoint-3"]
    state = json.loads((trained["out"] / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert trained["wandb_after_interrupt"] and trained["wandb_after_interrupt"][0].stat().st_size > 0
    assert trained["resumed"] == 0
    summary = json.loads((trained["out"] / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"].endswith("checkpoint-2")
    assert (trained["out"] / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_training_metrics_and_offline_wandb_names(trained):
    rows = list(read_metrics(trained["out"] / "metrics.jsonl"))
    names = set().union(*rows)
    for name in ("rewards/length/mean", "rewards/positive/q10", "dominance/quantile/eps", "kl"):
        assert name in names
    runs = sorted(trained["out"].glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2  # the interrupted run and the resumed one, both offline under the output dir
    keys = _wandb_keys(runs[-1])
    for name in (b"rewards/length/mean", b"dominance/quantile/eps", b"kl"):
        assert name in keys


@pytest.mark.slow
def test_evaluate_after_training(trained, tiny_lm, capsys):
    out = trained["out"] / "eval"
    prompts = trained["out"].parent / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS + ["how is the sun today", "are you happy"]))
    eval_cfg = write_yaml(trained["out"].parent / "eval.yaml", {
        "models": [{"name": "reference", "path": str(tiny_lm)}],
        "checkpoints": str(trained["out"]),  # checkpoint-2, checkpoint-4, final (not incomplete-checkpoint-3)
        "rewards": ["length", {"type": "regex", "pattern": "good|great|nice|happy", "name": "positive"}],
        "dominance": ["quantile", "sinkhorn"], "n_boot": 30, "max_new_tokens": 6, "html": True,
        "report_to": ["wandb"], "training_metrics": str(trained["out"]),
    })
    code, stdout, err = run_cli(capsys, "evaluate", "--config", eval_cfg, "--prompts", prompts, "-G", "3",
                                "--output-dir", out)
    assert code == 0, err
    assert "eps(final ≽ reference) [quantile]" in stdout
    assert "eps(final ≽ reference) [sinkhorn]" in stdout  # every estimator in the terminal, not only the first
    for name in ("report.md", "report.html", "report.json", "completions.jsonl", "figures/quantiles.png",
                 "figures/scatter.png", "figures/eps_sinkhorn.png", "figures/training.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["models"] == ["reference", "checkpoint-2", "checkpoint-4", "final"]
    assert report["n_prompts"] == 6 and report["G"] == 3
    for est in ("quantile", "sinkhorn"):
        d = report["dominance"][est]
        numbers = [x for key in ("eps", "se", "low", "high") for row in d[key] for x in row]
        assert all(isinstance(x, float) and math.isfinite(x) for x in numbers)
        assert d["eps"][1][0] + d["eps"][0][1] == pytest.approx(1.0)
        assert sorted(d["relative"]["ranking"]) == sorted(report["models"])
    assert report["kl"]["reference"]["kl"] == 0.0 and math.isfinite(report["kl"]["final"]["kl"])
    # checkpoint-4 is the model that was saved as final: same weights, same samples, same numbers
    assert report["stats"]["checkpoint-4"] == report["stats"]["final"]
    for m in report["models"]:
        assert all(math.isfinite(report["stats"][m][a]["mean"]) for a in report["attributes"])
    keys = _wandb_keys(next(out.glob("wandb/offline-run-*/run-*.wandb")))
    assert b"eval/final/rewards/length/mean" in keys and b"eval/dominance/sinkhorn/eps/final_vs_reference" in keys


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_lm):
    """``accelerate launch -m multidom train`` runs the same config on several processes (here 2 on CPU, gloo)."""
    cfg = write_yaml(tmp_path / "c.yaml", online_config(tiny_lm, max_steps=1, report_to="none"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run(
        [str(launcher), "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "multidom", "train", "--config", str(cfg), "--output-dir", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("multidom: done") == 1  # progress lines from the main process only
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["global_step"] == 1 and (tmp_path / "o" / "final" / "model.safetensors").is_file()


def test_every_unfinished_checkpoint_is_set_aside_and_nothing_else(tmp_path):
    """A checkpoint is complete when its manifest verifies (multidom.trainers.checkpoints); after an interrupt
    every top-level checkpoint that does not is set aside -- before 0.2 only the newest one was, judged by
    trainer_state.json alone -- and folders deeper below the output directory are never touched."""
    from multidom.app.rundir import after_interrupt
    from multidom.trainers.checkpoints import write_manifest

    for step, complete in ((2, True), (4, False), (10, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"w" * 64)
        if complete:
            write_manifest(folder)
    (tmp_path / ".staging" / "checkpoint-12").mkdir(parents=True)  # a save cut short
    (tmp_path / "sub" / "checkpoint-1").mkdir(parents=True)  # someone else's folder
    moved = after_interrupt(tmp_path)
    assert sorted(p.name for p in moved) == ["incomplete-checkpoint-10", "incomplete-checkpoint-4",
                                             "incomplete-staging"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-2", "incomplete-checkpoint-10", "incomplete-checkpoint-4", "incomplete-staging", "sub"]
    assert (tmp_path / "sub" / "checkpoint-1").is_dir()
