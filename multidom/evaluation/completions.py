"""Prompts and completions on disk: read held-out prompts, write and read completion JSONL files.

Completion file format (one JSON object per line, the one :func:`write_completions` writes)::

    {"model": "reference", "prompt": "How are you?", "completions": ["Fine.", "Good, thanks."]}

Single-completion rows ``{"model": ..., "prompt": ..., "completion": "..."}`` are accepted too and
grouped by ``(model, prompt)``. Every model must cover the same prompts with the same number
``G`` of completions each, because the evaluation resamples prompts jointly across models.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from multidom.keys import read_text

__all__ = ["read_prompts", "load_prompts", "write_completions", "read_completions"]

_DATASET_KEYS = ("path", "name", "split", "column", "limit")


def read_prompts(path: str | os.PathLike, *, field: str = "prompt", limit: int | None = None) -> list[Any]:
    """Prompts from a ``.txt`` file (one per non-empty line) or a ``.jsonl``/``.json`` file (``field``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file not found: {p}")
    if p.suffix in {".jsonl", ".json"}:
        rows = _read_jsonl(p) if p.suffix == ".jsonl" else json.loads(read_text(p, "prompts file"))
        prompts = []
        for i, row in enumerate(rows):
            if isinstance(row, str):
                prompts.append(row)
            elif isinstance(row, dict) and field in row:
                prompts.append(row[field])
            else:
                raise ValueError(f"{p}: row {i + 1} has no {field!r} field")
    else:
        prompts = [line.strip() for line in read_text(p, "prompts file").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompts file {p} holds no prompts")
    return prompts[:limit] if limit else prompts


def load_prompts(spec: Any) -> list[Any]:
    """Prompts from a config value: a list (as is), a file path (:func:`read_prompts`), or a dataset
    mapping ``{path: hub id or saved folder, name, split: test, column: prompt, limit: N}`` read with
    ``datasets`` (prompts may be chat-message lists, e.g. ``trl-lib/hh-rlhf-helpful-base``)."""
    if isinstance(spec, list):
        if not spec:
            raise ValueError("prompts: the list is empty")
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return read_prompts(spec)
    if not isinstance(spec, dict) or "path" not in spec:
        raise ValueError("prompts must be a list, a file, or a mapping {path, split, column, limit}")
    from multidom.keys import check_keys

    check_keys(spec, _DATASET_KEYS, "prompts")
    import datasets

    path, column = str(spec["path"]), spec.get("column", "prompt")
    if Path(path).suffix in {".txt", ".jsonl", ".json"} and Path(path).is_file():
        return read_prompts(path, field=column, limit=spec.get("limit"))
    try:
        ds = (datasets.load_from_disk(path) if Path(path).is_dir()
              else datasets.load_dataset(path, spec.get("name"), split=spec.get("split", "test")))
    except (ConnectionError, OSError) as exc:
        raise FileNotFoundError(f"prompts: cannot load dataset {path!r} ({type(exc).__name__}); "
                                "offline, pass a local file or folder") from None
    if hasattr(ds, "keys"):  # a DatasetDict saved to disk
        ds = ds[spec.get("split", "test")]
    if column not in ds.column_names:
        raise ValueError(f"prompts: no column {column!r} in {path} (columns: {', '.join(ds.column_names)})")
    limit = spec.get("limit")
    return list(ds[column][: int(limit)] if limit else ds[column])


def _read_jsonl(p: Path) -> list[Any]:
    rows = []
    for i, line in enumerate(read_text(p, "file").splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: line {i + 1} is not valid JSON ({exc.msg})") from None
    return rows


def write_completions(path: str | os.PathLike, completions: dict[str, Sequence[Sequence[str]]], prompts: Sequence[Any]) -> Path:
    """Write ``{model: B x G texts}`` for ``prompts`` (``B``) as JSONL (module docstring)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w") as fh:
        for model, rows in completions.items():
            if len(rows) != len(prompts):
                raise ValueError(f"model {model!r}: {len(rows)} completion rows for {len(prompts)} prompts")
            for prompt, row in zip(prompts, rows):
                fh.write(json.dumps({"model": model, "prompt": prompt, "completions": list(row)}) + "\n")
    return p


def read_completions(path: str | os.PathLike) -> tuple[list[Any], dict[str, list[list[str]]]]:
    """Read a completion file: ``(prompts (B), {model: B lists of G texts})``, models in file order.

    Raises ``ValueError`` when models do not share the same prompts or the same ``G``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"completions file not found: {p}")
    grouped: dict[str, dict[str, list[str]]] = {}
    prompt_of: dict[str, Any] = {}
    for i, row in enumerate(_read_jsonl(p)):
        if not isinstance(row, dict) or "model" not in row or "prompt" not in row:
            raise ValueError(f"{p}: row {i + 1} needs 'model' and 'prompt' fields")
        if "completions" in row:
            texts = row["completions"]
        elif "completion" in row:
            texts = [row["completion"]]
        else:
            raise ValueError(f"{p}: row {i + 1} has neither 'completions' nor 'completion'")
        key = json.dumps(row["prompt"], sort_keys=True)
        prompt_of.setdefault(key, row["prompt"])
        grouped.setdefault(str(row["model"]), {}).setdefault(key, []).extend(str(t) for t in texts)
    if not grouped:
        raise ValueError(f"completions file {p} is empty")
    models = list(grouped)
    keys = list(grouped[models[0]])
    for m in models[1:]:
        if set(grouped[m]) != set(keys):
            raise ValueError(f"{p}: model {m!r} does not cover the same prompts as {models[0]!r}")
    sizes = {len(texts) for m in models for texts in grouped[m].values()}
    if len(sizes) != 1:
        raise ValueError(f"{p}: every model needs the same number of completions per prompt, found {sorted(sizes)}")
    return [prompt_of[k] for k in keys], {m: [grouped[m][k] for k in keys] for m in models}
