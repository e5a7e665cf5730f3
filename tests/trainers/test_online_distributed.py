"""Two gloo processes give the same dominance rewards (hence advantages) as one process (issue 5).

The 12 completions of 3 prompts (G = 4) are split 6 / 6, so prompt 1's group straddles the two ranks;
the baseline clouds have different sizes on the two ranks (padding across ranks), and one completion is
masked. Each rank returns its slice of ``-phi``; concatenated they must equal the one-process result.
"""
from __future__ import annotations

import json
import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

G, N, D = 4, 12, 2
CASES = [("sinkhorn", "per_prompt"), ("sliced", "per_prompt"), ("quantile", "pooled")]


def _data():
    gen = torch.Generator().manual_seed(0)
    vectors = torch.randn(N, D, generator=gen).tolist()
    vectors[5] = [None, 0.3]  # masked by the bank
    sizes = [5, 3, 4]
    baselines = [torch.randn(m, D, generator=gen).tolist() for m in sizes]
    prompts = [f"p{i // G}" for i in range(N)]
    completions = [f"c{i}" for i in range(N)]
    baseline_col = [baselines[i // G] for i in range(N)]
    return prompts, completions, baseline_col, vectors


def _rewards(rows: slice, estimator: str, grouping: str, out_dir: str) -> list:
    from multidom.trainers.online import DominanceReward, OnlineDominanceConfig
    from multidom.trainers.online_baseline import Scorer

    prompts, completions, baseline_col, vectors = _data()
    table = dict(zip(completions, vectors))
    scorer = Scorer(lambda p, c, **_: [[math.nan if v is None else v for v in table[x]] for x in c], ["r0", "r1"])
    cfg = OnlineDominanceConfig(output_dir=out_dir, report_to="none", num_generations=G, use_cpu=True,
                                per_device_train_batch_size=4, grouping=grouping, seed=11,
                                dominance={"estimator": estimator,
                                           "options": {"tol": 1e-8} if estimator == "sinkhorn" else {}},
                                plot_steps=0, all_estimators_steps=0)
    agg = DominanceReward(scorer, cfg)
    return agg(prompts[rows], completions[rows], baseline_rewards=baseline_col[rows])


def _worker(rank: int, world: int, init: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        half = N // world
        rows = slice(rank * half, (rank + 1) * half)
        result = {f"{e}/{g}": _rewards(rows, e, g, out_dir) for e, g in CASES}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(result, fh)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    mp.spawn(_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    parts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for e, g in CASES:
        key = f"{e}/{g}"
        two = parts[0][key] + parts[1][key]
        one = _rewards(slice(0, N), e, g, str(tmp_path))
        assert [v is None for v in two] == [v is None for v in one] == [i == 5 for i in range(N)]
        a = torch.tensor([0.0 if v is None else v for v in one])
        b = torch.tensor([0.0 if v is None else v for v in two])
        assert a.abs().max() > 1e-3, key  # a real signal, not all zeros
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=key)
