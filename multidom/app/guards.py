"""Early checks of the command line (before any model is loaded) and its error and interrupt handling.

* :func:`check_local_paths` / :func:`check_reward_types`: a local path that does not exist, an unknown
  reward type -- one line, at once;
* :func:`ensure_writable`: the output directory can be written;
* :func:`one_line`: an exception as the one line the CLI prints;
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from multidom.keys import ConfigError

__all__ = ["find_default_config", "check_local_paths", "check_reward_types", "ensure_writable", "one_line",
           "finish_wandb", "CLIError"]

#: Config keys whose value, when it looks like a local path (``/``, ``./``, ``../``, ``~``), must exist.
_PATH_KEYS = frozenset({
    "model", "name_or_path", "model_name_or_path", "model_path", "ref_model", "ref_model_name_or_path",
    "reference_model", "tokenizer", "tokenizer_name_or_path", "checkpoint", "path", "prompts", "completions",
    "train", "eval", "desirable", "undesirable", "data_files", "training_metrics", "checkpoints",
})
_REWARD_KEYS = frozenset({"rewards"})


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


def find_default_config(name: str = "quickstart.yaml") -> Path:
    """Locate ``configs/<name>``: the repository checkout next to the package, then the package data
    (``multidom/configs/``), then the current directory."""
    here = Path(__file__).resolve().parents[1]  # the multidom package
    candidates = [here.parent / "configs" / name, here / "configs" / name, Path.cwd() / "configs" / name]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"default config {name} not found (looked in {', '.join(str(c.parent) for c in candidates)}); pass --config"
    )


def check_local_paths(config: Any, where: str = "") -> None:
    """Fail early, in one line, when a model/data key names a local path that does not exist.

    Only values that are unambiguously local (absolute, ``./``, ``../`` or ``~``) are checked; hub
    ids are left to the libraries that own them.
    """
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{where}.{key}" if where else str(key)
            if key in _PATH_KEYS and isinstance(value, str) and _looks_local(value):
                if not Path(value).expanduser().exists():
                    raise FileNotFoundError(f"{path}: path does not exist: {value}")
            check_local_paths(value, path)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            check_local_paths(value, f"{where}.{i}")


def check_reward_types(config: Any) -> None:
    """Fail early, in one line, on an unknown reward-model type in any ``rewards``/``reward_models`` list
    (before models are loaded); the registry answers with close matches."""
    specs = list(_reward_specs(config))
    if not specs:
        return
    import reward_models

    for spec in specs:
        name = spec.get("type") if isinstance(spec, dict) else spec
        if isinstance(name, str):
            reward_models.get_factory(name)


def _reward_specs(config: Any):
    if isinstance(config, dict):
        for key, value in config.items():
            if key in _REWARD_KEYS and isinstance(value, list):
                yield from value
            else:
                yield from _reward_specs(value)
    elif isinstance(config, list):
        for value in config:
            yield from _reward_specs(value)


def _looks_local(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or value in {".", ".."}


def ensure_writable(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` and check a file can be written in it; a one-line error otherwise."""
    out = Path(output_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".multidom-write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CLIError(f"output directory {out} is not writable: {reason}") from exc
    return out


_MAX_MESSAGE = 600


def one_line(exc: BaseException) -> str:
    """The exception as one line: its lines joined (library messages put the hint, e.g. "pass a local
    path", on a later line), capped in length; the type is named unless the error is one of ours."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if "huggingface.co" in text and "local path" not in text:  # DESIGN.md §7: say how to work offline
        text = f"{text[:_MAX_MESSAGE // 2]} -> without the hub, download it once and pass its local path"
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    if isinstance(exc, (ConfigError, CLIError, FileNotFoundError)) or type(exc) is ValueError:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def finish_wandb(exit_code: int) -> None:
    """Close an active wandb run so its offline files are complete and synced later with
    ``wandb sync <output_dir>/wandb/offline-run-*`` (no-op when wandb was not used)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish(exit_code=exit_code)
        except Exception:  # pragma: no cover - never mask the original outcome
            pass


