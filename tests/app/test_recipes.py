"""The one config-to-run path (multidom.app.recipes) for the offline trainers, from the shipped example configs."""
from __future__ import annotations

import pytest
from aot_tiny import tiny_model, tiny_tokenizer


def test_run_from_example_config_with_reward_bank(tmp_path):
    """configs/offline_multireward.yaml with the candidates scored once by the reward bank (no reward columns)."""
    import json
    from pathlib import Path

    from multidom.app.config import load_config
    from multidom.app.recipes import run_training

    tiny = tmp_path / "tiny"
    tiny_model(seed=8).save_pretrained(tiny)
    tiny_tokenizer().save_pretrained(tiny)
    data = tmp_path / "cands.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}:", "completions": ["abab", "zz top", "ab"]}) + "\n"
                            for i in range(8)))
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "offline_multireward.yaml", [
        f"model.name_or_path={tiny}", "model.peft=null", f"data.train={data}", "data.reward_columns=null",
        "rewards=[{type: regex, pattern: ab, name: has_ab}, {type: brevity, unit: chars}]",
        "training.report_to=none", "training.use_cpu=true", "training.max_steps=1", "training.max_length=32",
        "training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=2", "training.save_strategy=no",
        "dominance.estimator=quantile", "dominance.options={}"])
    assert cfg.pop("trainer") == "offline"
    out = run_training("offline", cfg, output_dir=str(tmp_path / "run"))
    assert out["global_step"] == 1 and Path(out["model_path"]).is_dir()
    row = out["final_metrics"]
    # policy == reference at step 1: uniform weights, so the policy means are the plain means of the scores
    assert row["rewards/has_ab/policy_mean"] == pytest.approx(2 / 3, rel=1e-5)  # "abab", "ab" match; "zz top" not
    assert row["rewards/brevity/policy_mean"] == pytest.approx(-(4 + 6 + 2) / 3, rel=1e-5)  # lower length is better
    assert row["dominance/quantile/eps"] == pytest.approx(0.5, abs=1e-5)
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["online_toy.yaml", "aot_unpaired.yaml", "offline_multireward.yaml"])
def test_the_small_example_configs_run_here_as_shipped(name, tmp_path, monkeypatch, capsys):
    """The README says these run on this machine: the toy model built as their header says, the shipped data,
    no hub. (Steps cut to 4 to keep the suite fast.)"""
    import json
    import shutil
    from pathlib import Path

    from multidom.app import cli
    from multidom.app.toy import build_toy_model

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    build_toy_model("runs/toy-model")
    code = cli.main(["train", "--config", f"configs/{name}", "--output-dir", "runs/x", "training.max_steps=4",
                     "training.report_to=none"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(Path("runs/x/summary.json").read_text())
    assert summary["global_step"] == 4 and Path(summary["model_path"]).is_dir()
    assert any(k.startswith("dominance/") and k.endswith("/eps") for k in summary["final_metrics"])
