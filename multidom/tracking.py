"""Run tracking through a small interface (STYLE.md §9): metrics go to ``metrics.jsonl`` on disk,
and to whatever the Trainer's ``report_to`` names (wandb included, offline unless a key is set).

Metric names are stable: ``rewards/<attribute>/<stat>``, ``dominance/<estimator>/<stat>``, ``kl``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

from transformers import TrainerCallback

__all__ = ["configure_wandb", "JsonlMetrics", "read_metrics"]


def configure_wandb(output_dir: str | os.PathLike) -> str:
    """Make wandb safe without a network: offline mode unless the user configured a key.

    Sets ``WANDB_DIR`` to ``output_dir`` (each run's files are written under its own output
    directory, also when several runs share one process) and ``WANDB_MODE=offline``
    unless ``WANDB_MODE`` is already set or an API key is configured (``WANDB_API_KEY`` or a
    ``~/.netrc`` entry for the wandb host). Returns the mode in force.
    """
    os.environ["WANDB_DIR"] = str(output_dir)
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" not in os.environ:
        netrc = Path.home() / ".netrc"
        has_key = bool(os.environ.get("WANDB_API_KEY")) or (
            netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
        )
        os.environ["WANDB_MODE"] = "online" if has_key else "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.environ["WANDB_MODE"]


class JsonlMetrics(TrainerCallback):
    """Append every ``Trainer.log`` call as one JSON line (``{"step": s, **logs}``) to a file.

    Only the main process writes. Non-finite floats are written as ``null`` so the file stays
    valid JSON.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102 (TrainerCallback API)
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {"step": state.global_step, **{k: _jsonable(v) for k, v in logs.items()}}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return _jsonable(v.item())
    return v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v)


def read_metrics(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the rows written by :class:`JsonlMetrics`."""
    with Path(path).open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
