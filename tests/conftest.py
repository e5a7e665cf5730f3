"""Shared test settings: pinned threads (the machine is shared and noisy), offline hubs and wandb."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared helpers (aot_tiny) for every test folder

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory) -> dict[str, Path]:
    """Two saved random tiny chat models (tests/lm_tiny.py): ``ref`` and ``other``."""
    from lm_tiny import save_tiny_lm

    root = tmp_path_factory.mktemp("lms")
    return {"ref": save_tiny_lm(root / "ref", seed=0), "other": save_tiny_lm(root / "other", seed=1)}
