"""The output directory of a run: claimed safely, resumed from the last complete checkpoint.

* :func:`claim` refuses a directory that already holds a run unless ``--resume`` (continue it) or
  ``--overwrite`` (replace it: the run's own files are removed, nothing else);
* :func:`resume_point` sets aside what a crash left half-written (through
  :func:`multidom.trainers.checkpoints.prepare_resume`) and returns the newest complete checkpoint;
* :func:`after_interrupt` does the same cleanup after Ctrl-C / SIGTERM, on the run's own top-level
  folders only (``checkpoint-*`` of the output directory and of the quickstart's ``align/``), never on
  folders deeper below it that belong to something else.
"""
from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["RUN_FILES", "holds_run", "claim", "resume_point", "after_interrupt", "RUN_SUBDIRS"]

#: Files and folders a multidom run writes at the top of its output directory.
RUN_FILES = ("multidom_run.json", "summary.json", "metrics.jsonl", "final", "baseline_cache.json", "plots",
             "quickstart_summary.json", "aligned", "report", "wandb", ".staging")
#: Sub-directories that hold a run's checkpoints besides the output directory itself (the quickstart's).
RUN_SUBDIRS = ("align",)


def _run_dirs(out: Path) -> list[Path]:
    return [out, *(out / s for s in RUN_SUBDIRS if (out / s).is_dir())]


def holds_run(out: Path) -> list[str]:
    """What in ``out`` shows a previous run (empty when there is none)."""
    found = []
    for d in _run_dirs(out):
        for name in RUN_FILES:
            if (d / name).exists() and name != "wandb":
                found.append(str((d / name).relative_to(out)))
        found += [str(p.relative_to(out)) for p in sorted(d.glob("checkpoint-*")) if p.is_dir()]
    return found


def claim(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a used output directory unless resuming or overwriting (see the module docstring)."""
    from multidom.app.guards import CLIError

    if resume and overwrite:
        raise CLIError("--resume and --overwrite exclude each other")
    used = holds_run(out)
    if not used or resume:
        return
    if not overwrite:
        shown = ", ".join(used[:4]) + (", ..." if len(used) > 4 else "")
        raise CLIError(f"output directory {out} already holds a run ({shown}); pass --resume to continue it, "
                       "--overwrite to replace it, or choose another --output-dir")
    for d in _run_dirs(out):
        for p in [*(d / n for n in RUN_FILES), *d.glob("checkpoint-*"), *d.glob("incomplete-checkpoint-*")]:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


def resume_point(run_dir: str | Path) -> tuple[Path | None, list[Path]]:
    """``(newest complete checkpoint or None, folders set aside)`` of one run directory."""
    from multidom.trainers.checkpoints import prepare_resume

    return prepare_resume(run_dir)


def after_interrupt(out: Path) -> list[Path]:
    """Set aside half-written checkpoints of the run in ``out`` (own top-level folders only)."""
    moved: list[Path] = []
    for d in _run_dirs(out):
        moved += resume_point(d)[1]
    return moved
