"""Bad input is refused early and clearly (issue 12): one line naming the key or file, before any model loads,
no minute of hub retries, no silent fallback that changes a result."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from multidom.app import cli
from multidom.app.toy import build_toy_model

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, err


def one_line(code: int, err: str, *fragments: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("multidom: error")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_model(tmp_path_factory.mktemp("toy") / "model")


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def offline_cfg(toy: Path, train: Path) -> dict:
    cfg = yaml.safe_load((REPO / "configs" / "offline_multireward.yaml").read_text())
    cfg["model"]["name_or_path"] = str(toy)
    cfg["data"]["train"] = str(train)
    cfg["training"].update(report_to="none", max_steps=2)
    return cfg


def test_config_file_not_utf8_names_the_file(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("trainer: online\n# caf\xe9\n".encode("latin-1"))
    one_line(*run_cli(capsys, "train", "--config", bad, "-o", tmp_path / "o"), "latin1.yaml is not UTF-8")


@pytest.mark.parametrize("content, fragment", [(b"", "is empty"), ("{\"prompt\": \"caf\xe9\"}\n".encode("latin-1"),
                                                                     "is not UTF-8")])
def test_data_file_empty_or_not_utf8(toy, tmp_path, capsys, content, fragment):
    data = tmp_path / "train.jsonl"
    data.write_bytes(content)
    cfg = write(tmp_path / "c.yaml", offline_cfg(toy, data))
    one_line(*run_cli(capsys, "train", "--config", cfg, "-o", tmp_path / "o"), "train.jsonl", fragment)


def test_offline_reward_column_with_none_fails_before_training(toy, tmp_path, capsys):
    rows = [json.loads(x) for x in (REPO / "configs" / "data" / "offline_candidates.jsonl").read_text().splitlines()]
    rows[5]["share_b"][1] = None
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    one_line(*run_cli(capsys, "train", "--config", write(tmp_path / "c.yaml", offline_cfg(toy, data)), "-o", out),
             "row 5", "'share_b'", "None")
    assert not list(out.glob("checkpoint-*"))  # failed before the first step, not after three checkpoints


@pytest.mark.parametrize("override, fragment", [
    ("dominance.cost=hingee", "unknown cost 'hingee'; did you mean 'hinge'"),
    ("dominance.estimator=wasserstein", "unknown estimator 'wasserstein'"),
    ("dominance.options={foo: 1}", "'foo'"),
    ("training.learning_rate=fast", "training.learning_rate must be a number, got 'fast'"),
    ("training.beta='0.1'", "training.beta must be a number"),
    ("training.learning_rate=-0.1", "training.learning_rate must be > 0"),
    ("training.gradient_accumulation_steps=0", "training.gradient_accumulation_steps must be >= 1"),
    ("model.trust_remote_code='false'", "trust_remote_code must be true or false"),
])
def test_bad_values_fail_before_loading(toy, tmp_path, capsys, override, fragment):
    data = REPO / "configs" / "data" / "offline_candidates.jsonl"
    cfg = write(tmp_path / "c.yaml", offline_cfg(toy, data))
    started = time.perf_counter()
    one_line(*run_cli(capsys, "train", "--config", cfg, "-o", tmp_path / "o", override), fragment)
    assert time.perf_counter() - started < 10


def test_online_G_below_two_is_a_clear_error(toy, tmp_path, capsys):
    cfg = yaml.safe_load((REPO / "configs" / "online_toy.yaml").read_text())
    cfg["model"] = str(toy)
    path = write(tmp_path / "c.yaml", cfg)
    one_line(*run_cli(capsys, "train", "--config", path, "-o", tmp_path / "o", "training.num_generations=0"),
             "training.num_generations must be >= 2")


def test_hub_id_fails_fast_when_the_hub_is_unreachable(tmp_path, capsys, monkeypatch):
    from multidom.lm import loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: connection refused at once
    loading._REACHABLE.clear()
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="not a local folder and the Hugging Face hub is unreachable.*local path"):
        loading.load_model(loading.ModelSpec("some-org/some-model"))
    assert time.perf_counter() - started < 10
    loading._REACHABLE.clear()


def test_local_looking_model_path_that_does_not_exist(tmp_path, capsys):
    cfg = yaml.safe_load((REPO / "configs" / "online_toy.yaml").read_text())
    cfg["model"] = "./runs/nope"
    path = write(tmp_path / "c.yaml", cfg)
    one_line(*run_cli(capsys, "train", "--config", path, "-o", tmp_path / "o"), "runs/nope")


def test_wandb_key_without_network_falls_back_to_offline(tmp_path, monkeypatch):
    from multidom.trainers import tracking

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.warns(UserWarning, match="unreachable; logging offline"):
        mode = tracking.configure_wandb(tmp_path)
    assert mode == "offline" and time.perf_counter() - started < 10
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_evaluate_refuses_a_quoted_false_and_duplicate_names_before_generating(tmp_path, capsys):
    cfg = {"models": [{"name": "a", "path": str(tmp_path)}, {"name": "b", "path": str(tmp_path),
                                                              "trust_remote_code": "false"}],
           "prompts": ["p"], "rewards": ["length"]}
    one_line(*run_cli(capsys, "evaluate", "--config", write(tmp_path / "e.yaml", cfg), "-o", tmp_path / "e"),
             "models[1].trust_remote_code must be true or false")
    cfg["models"][1] = {"name": "a", "path": str(tmp_path)}
    one_line(*run_cli(capsys, "evaluate", "--config", write(tmp_path / "e.yaml", cfg), "-o", tmp_path / "e"),
             "distinct")
    cfg["models"][1] = {"name": "b", "path": str(tmp_path)}
    one_line(*run_cli(capsys, "evaluate", "--config", write(tmp_path / "e.yaml", cfg), "-o", tmp_path / "e",
                      "--n-boot", "3"), "n_boot must be >= 20")
