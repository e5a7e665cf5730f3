"""Crash-safe checkpoints for every multidom trainer (the HF ``Trainer``'s save, made atomic).

A checkpoint is written into ``<output_dir>/.staging/checkpoint-N`` by the ``Trainer`` as usual (weights,
optimizer, scheduler, RNG states, ``trainer_state.json``); then a manifest ``multidom_manifest.json``
(every file's size and SHA-256) is written last, and the folder is renamed to
``<output_dir>/checkpoint-N`` -- one atomic ``rename`` on the same file system. So a
``checkpoint-N`` folder either is complete or was damaged afterwards, and :func:`is_complete` tells
which by checking the manifest (a missing ``optimizer.pt``, a truncated or torn weights file fail it).

After a kill -9, SIGTERM, a full disk or a failing write, :func:`prepare_resume` sets aside every
top-level ``checkpoint-*`` that does not verify (renamed ``incomplete-checkpoint-N``) and the staging
folder, and returns the newest complete checkpoint. Only the run's own top-level folders are touched,
never anything deeper below the output directory.

Cost: hashing reads each checkpoint once more (about 1 GB/s); worth it for a resume that must not
start from garbage.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

__all__ = ["SafeCheckpoints", "MANIFEST", "is_complete", "prepare_resume", "write_manifest", "STAGING"]

MANIFEST = "multidom_manifest.json"
STAGING = ".staging"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_FORMAT = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``multidom_manifest.json`` (relative path -> size, sha256 of every file), atomically, fsynced."""
    folder = Path(folder)
    entries = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)}
    tmp = folder / f".{MANIFEST}.tmp"
    with tmp.open("w") as fh:
        json.dump({"format": _FORMAT, "files": entries}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(folder / MANIFEST)
    return folder / MANIFEST


def is_complete(folder: str | os.PathLike, *, checksums: bool = True) -> bool:
    """Whether ``folder`` holds a manifest and every file it lists, with the recorded size (and SHA-256)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != _FORMAT or "trainer_state.json" not in files:
            return False
        for name, meta in files.items():
            p = folder / name
            if not p.is_file() or p.stat().st_size != meta["size"]:
                return False
            if checksums and _sha256(p) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))] \
        if output_dir.is_dir() else []
    return sorted(found)


def _set_aside(path: Path) -> Path:
    target = path.with_name(f"incomplete-{path.name.lstrip('.')}")
    k = 1
    while target.exists():
        k += 1
        target = path.with_name(f"incomplete-{path.name.lstrip('.')}-{k}")
    path.rename(target)
    return target


def prepare_resume(output_dir: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """``(newest complete checkpoint or None, folders set aside)`` for the run in ``output_dir``.

    Every top-level ``checkpoint-N`` that fails :func:`is_complete` and a left-over staging folder are
    renamed ``incomplete-...``; nothing else is touched. Only the checkpoint returned is hashed in full;
    older ones are checked by manifest and sizes (they are not resumed from, and hashing every kept
    checkpoint of a large model would read many gigabytes on each Ctrl-C).
    """
    out = Path(output_dir)
    moved: list[Path] = []
    staging = out / STAGING
    if staging.exists():
        moved.append(_set_aside(staging))
    best = None
    for _, path in reversed(_checkpoints(out)):  # newest first: only the one resumed from is hashed in full
        if is_complete(path, checksums=best is None):
            best = best or path
        else:
            moved.append(_set_aside(path))
    return best, moved


class SafeCheckpoints:
    """Mixin for a ``transformers.Trainer`` subclass: checkpoints staged, manifested, then renamed."""

    _staging_run_dir: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_run_dir is not None:
            return self._staging_run_dir
        return super()._get_output_dir(trial)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(super()._get_output_dir(trial))  # type: ignore[misc]
        staging = run_dir / STAGING
        name = f"checkpoint-{self.state.global_step}"  # type: ignore[attr-defined]
        accelerator = self.accelerator  # type: ignore[attr-defined]
        if self.args.should_save:  # type: ignore[attr-defined]
            if (staging / name).exists():
                shutil.rmtree(staging / name)
            staging.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        self._staging_run_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging_run_dir = None
        accelerator.wait_for_everyone()
        if self.args.should_save:  # type: ignore[attr-defined]
            write_manifest(staging / name)
            final = run_dir / name
            if final.exists():  # a checkpoint of the same step from a replaced run: keep it aside, not lost
                _set_aside(final)
            os.replace(staging / name, final)
            best = self.state.best_model_checkpoint  # type: ignore[attr-defined]
            if best and str(best).startswith(str(staging)):
                self.state.best_model_checkpoint = str(run_dir / Path(best).name)  # type: ignore[attr-defined]
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,  # type: ignore
                               best_model_checkpoint=self.state.best_model_checkpoint,  # type: ignore[attr-defined]
                               use_mtime=False)
        accelerator.wait_for_everyone()
