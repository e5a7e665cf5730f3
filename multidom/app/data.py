"""The one data loader of the run recipes: a ``data:`` entry -> ``datasets.Dataset``.

An entry is a local file (``.json``/``.jsonl``/``.csv``/``.parquet``), a ``save_to_disk`` folder, a hub
id, or a mapping ``{path, name, split, data_files}`` passed to ``datasets.load_dataset``. Local files are
checked before any loading: a missing file, an empty file, or a file that is not UTF-8 is a one-line
error naming the file. A hub id with the hub unreachable fails at once with a message to pass a local
path.

:func:`load_prompts` builds the online trainer's prompt datasets (``data.path`` or inline
``data.prompts``); the offline trainers use :func:`load_data` for each of their sets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from multidom.keys import ConfigError, check_keys

__all__ = ["FILE_FORMATS", "load_data", "load_prompts", "ONLINE_DATA_KEYS"]

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
ONLINE_DATA_KEYS = ("path", "name", "split", "prompt_column", "prompts", "eval_prompts", "eval_split",
                    "max_samples", "chat")


def _check_text_file(p: Path, what: str) -> None:
    if p.suffix == ".parquet":
        return
    raw = p.read_bytes()
    if not raw.strip():
        raise ConfigError(f"{what}: file {p} is empty")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: file {p} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None


def load_data(spec: Any, what: str) -> Any:
    """A ``datasets.Dataset`` from a file, a ``save_to_disk`` folder, a hub id or a ``load_dataset`` mapping."""
    import datasets

    if isinstance(spec, dict):
        check_keys(spec, ("path", "name", "split", "data_files"), f"data.{what}")
        if "path" not in spec:
            raise ConfigError(f"data.{what} needs a 'path' (file, folder or hub id)")
        spec = dict(spec)
        path, split = str(spec.pop("path")), spec.pop("split", "train")
    elif isinstance(spec, str):
        path, split, spec = spec, "train", {}
    else:
        raise ConfigError(f"data.{what} must be a path, a hub id or a mapping, got {type(spec).__name__}")
    p = Path(path).expanduser()
    if p.suffix in FILE_FORMATS:
        if not p.is_file():
            raise FileNotFoundError(f"data.{what}: file not found: {p}")
        _check_text_file(p, f"data.{what}")
        try:
            data = datasets.load_dataset(FILE_FORMATS[p.suffix], data_files=str(p), split=split)
        except Exception as exc:  # a malformed JSON line, a broken CSV
            raise ConfigError(f"data.{what}: cannot read {p}: {str(exc).splitlines()[0]}") from None
    elif p.is_dir() and (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file():
        data = datasets.load_from_disk(str(p))
        data = data[split] if hasattr(data, "keys") else data
    elif p.exists():
        raise ConfigError(f"data.{what}: {p} is neither a data file (.jsonl, .json, .csv, .parquet) nor a "
                          "save_to_disk folder")
    elif path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"data.{what}: path does not exist: {p}")
    else:
        from multidom.lm.loading import OFFLINE_HINT, hub_reachable

        if not hub_reachable():
            raise FileNotFoundError(f"data.{what}: {path!r} is not a local file and the Hugging Face hub is "
                                    f"unreachable; {OFFLINE_HINT}")
        try:
            data = datasets.load_dataset(path, split=split, **spec)
        except (ConnectionError, OSError) as exc:
            raise FileNotFoundError(f"data.{what}: cannot load {path!r} from the hub ({type(exc).__name__}); "
                                    "pass a local path instead") from None
    if len(data) == 0:
        raise ConfigError(f"data.{what}: the dataset {path} has no rows")
    return data


def _as_rows(prompts: Any, chat: bool) -> list:
    if not isinstance(prompts, list) or not prompts:
        raise ConfigError("data.prompts must be a non-empty list of prompts")
    return [[{"role": "user", "content": p}] if chat and isinstance(p, str) else p for p in prompts]


def load_prompts(data: dict) -> tuple[Any, Any]:
    """``(train, eval or None)`` datasets with a ``prompt`` column for the online trainer.

    Keys: ``path`` (with ``name``, ``split``, ``prompt_column``, ``max_samples``) or inline ``prompts``;
    ``eval_prompts`` inline held-out prompts, or ``eval_split`` of the same ``path``; ``chat: true``
    wraps plain-string prompts as one user message.
    """
    from datasets import Dataset

    check_keys(data, ONLINE_DATA_KEYS, "data")
    chat = data.get("chat", False)
    if not isinstance(chat, bool):
        raise ConfigError(f"data.chat must be true or false, got {chat!r}")
    if ("path" in data) == ("prompts" in data):
        raise ConfigError("data section needs exactly one of 'path' or 'prompts'")
    if "prompts" in data:
        train = Dataset.from_dict({"prompt": _as_rows(data["prompts"], chat)})
        evals = None
    else:
        source = {k: data[k] for k in ("path", "name") if data.get(k) is not None}
        train = _prompt_column(load_data({**source, "split": data.get("split", "train")}, "path"), data, chat)
        evals = None
        if data.get("eval_split"):
            evals = _prompt_column(load_data({**source, "split": data["eval_split"]}, "eval_split"), data, chat)
    if data.get("max_samples"):
        n = data["max_samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"data.max_samples must be an integer >= 1, got {n!r}")
        train = train.select(range(min(n, len(train))))
    if data.get("eval_prompts"):
        evals = Dataset.from_dict({"prompt": _as_rows(data["eval_prompts"], chat)})
    return train, evals


def _prompt_column(ds: Any, data: dict, chat: bool) -> Any:
    """Rename ``prompt_column`` to ``prompt``; TRL's prompt-less conversational rows get their prompt
    from TRL's own :func:`trl.data_utils.extract_prompt`."""
    col = data.get("prompt_column", "prompt")
    if col not in ds.column_names:
        if col == "prompt" and "chosen" in ds.column_names and "rejected" in ds.column_names:
            from trl.data_utils import extract_prompt

            ds = ds.map(extract_prompt)
        else:
            raise ConfigError(f"data: no column {col!r} in the dataset (columns: {', '.join(ds.column_names)})")
    elif col != "prompt":
        ds = ds.rename_column(col, "prompt")
    if chat:
        ds = ds.map(lambda r: {"prompt": _as_rows([r["prompt"]], True)[0]})
    return ds
