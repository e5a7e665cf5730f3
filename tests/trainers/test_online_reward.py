"""The online trainer's TRL reward function (DominanceReward) and its baseline cloud: masking, TRL's
advantages, bad input, the buffer baseline, config validation, dataset/reference baselines."""
from __future__ import annotations

import math

import pytest
import torch

from multidom.core.spec import DominanceSpec
from multidom.objectives.online import advantages_from_potentials
from multidom.trainers.online import DominanceReward, OnlineDominanceConfig
from multidom.trainers.online_baseline import Scorer, as_bank


def spec(estimator: str, cost: str = "hinge", normalisation: str = "none", **options) -> DominanceSpec:
    return DominanceSpec(estimator=estimator, cost=cost, options=options, normalisation=normalisation)


def _cfg(tmp_path, **kw) -> OnlineDominanceConfig:
    base = dict(output_dir=str(tmp_path), report_to="none", num_generations=2, per_device_train_batch_size=4,
                dominance=spec("quantile"), plot_steps=0, all_estimators_steps=0, use_cpu=True)
    base.update(kw)
    return OnlineDominanceConfig(**base)


def _table_scorer(table: dict[str, list[float | None]]) -> Scorer:
    """A bank that looks each completion up in ``table`` (completion -> d-vector, None = masked)."""
    d = len(next(iter(table.values())))

    def fn(prompts, completions, **_):
        return [[math.nan if v is None else v for v in table[c]] for c in completions]

    return Scorer(fn, [f"r{k}" for k in range(d)])


# --------------------------------------------------------------------------- the TRL reward aggregator
def _trl_advantages(rewards: list[float | None], G: int) -> torch.Tensor:
    """TRL 1.16 GRPO, one reward function, sum_then_normalize, scale_rewards='none' (grpo_trainer.py)."""
    r = torch.tensor([math.nan if v is None else v for v in rewards])
    mean = torch.nanmean(r.view(-1, G), dim=1).repeat_interleave(G)
    return torch.nan_to_num(r - mean, nan=0.0)


def test_aggregator_masking_counts_and_trl_advantages(tmp_path):
    table = {"good": [1.0, 1.0], "bad": [-1.0, 0.0], "mid": [0.0, 0.5], "none": [None, 1.0]}
    cfg = _cfg(tmp_path, num_generations=3, per_device_train_batch_size=6)
    agg = DominanceReward(_table_scorer(table), cfg)
    logged: dict[str, float] = {}
    extra: dict[str, list] = {}
    baseline = [[[0.0, 0.0], [0.5, 0.5]]] * 6
    out = agg(["p", "p", "p", "q", "q", "q"], ["good", "none", "bad", "mid", "none", "none"],
              completion_ids=[[1]] * 6, baseline_rewards=baseline,
              log_metric=logged.__setitem__, log_extra=extra.__setitem__)
    assert out[1] is None and out[4] is None and out[5] is None
    assert logged["dominance/masked_fraction"] == pytest.approx(0.5)
    assert logged["dominance/skipped_prompts"] == 0.0
    assert extra["r0"][0] == 1.0 and math.isnan(extra["r0"][1])
    adv = _trl_advantages(out, 3)
    expected = advantages_from_potentials(agg.last["phi"], agg.last["valid"]).reshape(-1)
    torch.testing.assert_close(adv, expected.float(), atol=1e-6, rtol=0)
    assert adv[0] > 0 > adv[2] and adv[1] == 0 and adv[3:].abs().max() == 0  # lone valid sample: A = 0
    # the masked samples did not enter the cloud: same potentials as without them
    agg2 = DominanceReward(_table_scorer(table), _cfg(tmp_path, num_generations=2))
    out2 = agg2(["p", "p"], ["good", "bad"], baseline_rewards=baseline[:2])
    assert [out[0], out[2]] == pytest.approx(out2, abs=1e-6)


def test_aggregator_bad_input(tmp_path):
    table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "n": [None, None]}
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError, match="no attributes"):
        as_bank([])
    with pytest.raises(ValueError, match="no attributes"):
        Scorer(lambda p, c: [], [])
    agg = DominanceReward(_table_scorer(table), cfg)
    with pytest.raises(ValueError, match="baseline has d = 3 attributes but the reward bank gives d = 2"):
        agg(["p", "p"], ["a", "b"], baseline_rewards=[[[0.0, 0.0, 0.0]]] * 2)
    with pytest.raises(ValueError, match="no baseline column"):
        agg(["p", "p"], ["a", "b"])
    logged: dict[str, float] = {}
    # prompt q has an empty baseline: logged skip, advantage 0, no NaN
    out = agg(["p", "p", "q", "q"], ["a", "b", "a", "b"], baseline_rewards=[[[0.5, 0.5]]] * 2 + [[]] * 2,
              log_metric=logged.__setitem__)
    assert out[2:] == [0.0, 0.0] and logged["dominance/skipped_prompts"] == 1.0
    assert all(math.isfinite(v) for v in out)
    # every generation masked: all None (TRL gives them advantage 0), everything skipped -- tolerated for
    # dead_attribute_steps - 1 calls, then the run stops naming the dead attributes
    patient = DominanceReward(_table_scorer(table), _cfg(tmp_path, dead_attribute_steps=2))
    logged.clear()
    out = patient(["p", "p"], ["n", "n"], baseline_rewards=[[[0.5, 0.5]]] * 2, log_metric=logged.__setitem__)
    assert out == [None, None]
    assert logged["dominance/masked_fraction"] == 1.0 and logged["dominance/skipped_prompts"] == 1.0
    patient(["p", "p"], ["a", "b"], baseline_rewards=[[[0.5, 0.5]]] * 2)  # alive again: the count restarts
    patient(["p", "p"], ["n", "n"], baseline_rewards=[[[0.5, 0.5]]] * 2)
    with pytest.raises(RuntimeError, match="'r0', 'r1' returned no finite score"):
        patient(["p", "p"], ["n", "n"], baseline_rewards=[[[0.5, 0.5]]] * 2)


def test_buffer_baseline(tmp_path):
    table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [2.0, 2.0]}
    agg = DominanceReward(_table_scorer(table), _cfg(tmp_path, baseline_source="buffer", buffer_steps=1))
    logged: dict[str, float] = {}
    first = agg(["p", "p"], ["a", "b"], log_metric=logged.__setitem__)
    assert first == [0.0, 0.0] and logged["dominance/skipped_prompts"] == 1.0  # empty buffer: logged skip
    second = agg(["p", "p"], ["c", "a"])
    assert second[0] > second[1]  # (2, 2) beats the buffered cloud {(1, 0), (0, 1)} more than (1, 0) does


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="scale_rewards must be one of none, group, batch"):
        _cfg(tmp_path, scale_rewards="std")
    assert _cfg(tmp_path, scale_rewards="group").scale_rewards == "group"  # GRPO's unit scale per group
    with pytest.raises(ValueError, match="unknown estimator 'wasserstein'"):
        _cfg(tmp_path, dominance={"estimator": "wasserstein"})
    with pytest.raises(ValueError, match="dominance.reg was renamed: use dominance.options.reg"):
        _cfg(tmp_path, dominance={"reg": 0.1})
    with pytest.raises(ValueError, match="option.*'foo'.*do not apply to estimator 'sinkhorn'"):
        _cfg(tmp_path, dominance={"estimator": "sinkhorn", "options": {"foo": 1}})
    with pytest.raises(ValueError, match="baseline_source must be one of"):
        _cfg(tmp_path, baseline_source="ref")
    cfg = _cfg(tmp_path, dominance={"estimator": "sliced"}, seed=3)
    assert cfg.beta > 0  # KL on by default
    assert cfg.step_options(4) == {"seed": 7}  # same slices on every process, new ones every step
    assert _cfg(tmp_path, dominance={"estimator": "sliced", "options": {"seed": 1}}).step_options(4) == {}
    assert cfg.step_options(4, "quantile") == {}


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_reference_baseline_sampling_shows_progress_unless_tqdm_is_disabled(tmp_path, monkeypatch, disable_tqdm):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import multidom.trainers.online_baseline as ob
    from multidom.app.toy import build_toy_model

    path = build_toy_model(tmp_path / "toy")
    calls = []
    real = ob.generate

    def recording_generate(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ob, "generate", recording_generate)
    cfg = _cfg(tmp_path, baseline_source="reference", baseline_samples=2, disable_tqdm=disable_tqdm,
               max_completion_length=4)
    out = ob.add_baseline_column(Dataset.from_dict({"prompt": ["n1 n2", "n3 n4"]}), cfg,
                                 _table_scorer_any(), model=AutoModelForCausalLM.from_pretrained(path),
                                 tokenizer=AutoTokenizer.from_pretrained(path))
    assert [len(v) for v in out["baseline_rewards"]] == [2, 2]
    assert len(calls) == 1 and calls[0]["progress"] is (not disable_tqdm) and calls[0]["desc"] == "baseline cloud"


def _table_scorer_any() -> Scorer:
    """A bank that gives every completion the point (1, 2)."""
    return Scorer(lambda prompts, completions, **_: [[1.0, 2.0] for _ in completions], ["r0", "r1"])


def test_dataset_responses_become_the_cached_baseline_column(tmp_path):
    from datasets import Dataset

    from multidom.trainers.online_baseline import add_baseline_column

    table = {"yes": [1.0, 2.0], "no": [0.0, None], "meh": [0.5, 0.5]}
    ds = Dataset.from_dict({"prompt": ["p", "q"], "response": [["yes", "no"], ["meh"]]})
    cfg = _cfg(tmp_path, baseline_source="dataset")
    out = add_baseline_column(ds, cfg, _table_scorer(table), cache_path=tmp_path / "cache.json")
    assert out["baseline_rewards"] == [[[1.0, 2.0]], [[0.5, 0.5]]]  # the masked response is dropped
    # cached under the key of the bank: the same bank reads the file and does not score again ...
    first = _table_scorer(table)
    cached = Scorer(lambda *a, **k: 1 / 0, ["r0", "r1"], spec=first.spec)
    again = add_baseline_column(ds, cfg, cached, cache_path=tmp_path / "cache.json")
    assert again["baseline_rewards"] == out["baseline_rewards"]
    # ... while another bank of the same width is not fed the first bank's points (before 0.2 it was: the cache
    # was keyed by prompt only, baseline mean -6.0 instead of +6.28)
    other = Scorer(lambda prompts, completions, **_: [[-1.0, -2.0] for _ in completions], ["r0", "r1"])
    rescored = add_baseline_column(ds, cfg, other, cache_path=tmp_path / "cache.json")
    assert rescored["baseline_rewards"] == [[[-1.0, -2.0]] * 2, [[-1.0, -2.0]]]
    wider = Scorer(lambda prompts, completions, **_: [[0.0, 0.0, 1.0] for _ in completions], ["a", "b", "c"])
    assert add_baseline_column(ds, cfg, wider, cache_path=tmp_path / "cache.json")["baseline_rewards"][1] == [
        [0.0, 0.0, 1.0]]
    one = add_baseline_column(Dataset.from_dict({"prompt": ["q"], "response": ["meh"]}), cfg, _table_scorer(table))
    assert one["baseline_rewards"] == [[[0.5, 0.5]]]  # one response string per row
    with pytest.raises(ValueError, match="no column 'response'"):
        add_baseline_column(Dataset.from_dict({"prompt": ["p"]}), cfg, _table_scorer(table))
