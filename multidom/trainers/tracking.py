"""Run tracking through a small interface (STYLE.md §9): metrics go to ``metrics.jsonl`` on disk,
and to whatever the Trainer's ``report_to`` names (wandb included, offline unless a key is set).

Metric names are stable: ``rewards/<attribute>/<stat>``, ``dominance/<estimator>/<stat>``, ``kl``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from transformers import TrainerCallback

__all__ = ["configure_wandb", "wandb_scope", "JsonlMetrics", "read_metrics"]

_EXIT_INTERRUPT, _EXIT_ERROR = 130, 1


def configure_wandb(output_dir: str | os.PathLike) -> str:
    """Make wandb safe without a network: offline mode unless the user configured a key.

    Sets ``WANDB_DIR`` to ``output_dir`` and ``WANDB_MODE=offline`` unless ``WANDB_MODE`` is
    already set or an API key is configured (``WANDB_API_KEY`` or a ``~/.netrc`` entry for the
    wandb host) and the server answers (a key without network falls back to offline with one
    warning, instead of aborting the training after minutes of retries). Returns the mode in force.

    wandb reads its environment once per process (the ``wandb.setup()`` singleton, created by the
    first ``wandb.init``), so a later ``WANDB_DIR`` alone would not move the next run: the Trainer's
    ``WandbCallback`` calls ``wandb.init`` without ``dir=`` and would write under the first run's
    folder. When that singleton exists, its ``root_dir`` is set to ``output_dir`` as well, so each
    run started afterwards (without ``dir=``) writes under its own output directory, also when
    several runs share one process (a notebook). A run already active is not touched; see
    :func:`wandb_scope` to close the run a training leaves open.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_DIR"] = str(output_dir)
    if "WANDB_MODE" not in os.environ:
        netrc = Path.home() / ".netrc"
        has_key = bool(os.environ.get("WANDB_API_KEY")) or (
            netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
        )
        mode = "online" if has_key else "offline"
        if has_key and not _wandb_reachable():
            import warnings

            warnings.warn("wandb: a key is configured but the wandb server is unreachable; logging offline under "
                          f"{output_dir} (sync later with `wandb sync`)", stacklevel=2)
            mode = "offline"
        os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    wandb = sys.modules.get("wandb")  # not imported yet: the first wandb.init reads the environment above
    if wandb is not None:
        from wandb.sdk import wandb_setup

        if wandb_setup.singleton().settings_if_loaded is not None:
            wandb.setup(settings=wandb.Settings(root_dir=str(output_dir)))
    return os.environ["WANDB_MODE"]


def _wandb_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the wandb server (``WANDB_BASE_URL``), instead of minutes of retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def wandb_scope(output_dir: str | os.PathLike) -> Iterator[str]:
    """One training's wandb lifetime: :func:`configure_wandb` on entry (yields the mode), and on exit
    ``wandb.finish`` of the run opened inside the block -- the Trainer's ``WandbCallback`` leaves its
    run open, and the next training in the same process would log into it (its ``wandb.init`` is
    skipped while ``wandb.run`` is set), under the previous output directory.

    The exit code recorded is 0, 130 after ``KeyboardInterrupt`` (the offline files of an interrupted
    run stay complete) or 1 after another exception, which is re-raised. A run that was already active
    on entry (opened by the caller, who wants the training logged into it) is left open.
    """
    before = _active_wandb_run()
    mode = configure_wandb(output_dir)
    try:
        yield mode
    except BaseException as exc:
        with contextlib.suppress(Exception):  # never mask the original error
            _finish_wandb_opened_since(before, _EXIT_INTERRUPT if isinstance(exc, KeyboardInterrupt) else _EXIT_ERROR)
        raise
    _finish_wandb_opened_since(before, 0)


def _active_wandb_run() -> Any:
    wandb = sys.modules.get("wandb")
    return getattr(wandb, "run", None) if wandb is not None else None


def _finish_wandb_opened_since(before: Any, exit_code: int) -> None:
    run = _active_wandb_run()
    if run is not None and run is not before:
        run.finish(exit_code=exit_code)


class JsonlMetrics(TrainerCallback):
    """Append every ``Trainer.log`` call as one JSON line (``{"step": s, **logs}``) to a file.

    Only the main process writes. Non-finite floats are written as ``null`` so the file stays
    valid JSON.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102 (TrainerCallback API)
        """On a resumed run, drop the rows logged after the checkpoint's step (they are replayed), so the
        file holds one history, as an uninterrupted run's would."""
        if not state.is_world_process_zero or not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line).get("step", 0) <= state.global_step]
        if len(kept) != len(rows):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(self.path)

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
