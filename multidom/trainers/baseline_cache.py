"""The baseline cache: what a baseline cloud was made from, and its file (DESIGN.md §8, "the baseline cloud
is data").

A cache file holds ``{"key": {...}, "fingerprint": sha256(key), "rows": {prompt key: [d-vector, ...]}}``.
The key names everything the points depend on except the prompt -- the model (name/path, a hash of its
config and a cheap checksum of two weight tensors), the sampling settings, the number of samples, the
seed, the source and the reward bank's spec (each model's class, name, orientation, description and
scalar settings) -- and rows are per prompt. Since each prompt's completions are seeded by the prompt
(:func:`multidom.lm.generation.generate` with ``per_prompt_seeds``), a row is the same whichever other
prompts a run has, so a run on more prompts reuses the rows it shares with the cache. With
``MULTIDOM_CACHE`` set, a copy is also kept under a content-addressed name there (:func:`shared_path`), so a
new run with the same key starts from it. A file under another
fingerprint is never read (a rerun with another bank of the same width resamples). Files are written
atomically (temporary file + ``os.replace``), so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["model_fingerprint", "bank_spec", "fingerprint", "read_rows", "write_rows", "atomic_write_text",
           "shared_path", "SHARED_ENV"]

#: When set, baseline caches are also kept under ``$MULTIDOM_CACHE/baselines/<fingerprint>.json`` -- content
#: addressed by the full key, so another run of the same model, sampling settings, seed and bank (e.g. the
#: quickstart rerun on its cached SFT model) reuses the rows instead of sampling them again.
SHARED_ENV = "MULTIDOM_CACHE"


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(model: Any) -> dict[str, Any]:
    """``{"name_or_path", "config", "weights"}``: the model's path, a hash of its config and a checksum of the
    first and last materialised weight tensors (first 4096 values). Cheap: no full pass over the weights.
    A PEFT model is described by its base model (the reference is the adapter-disabled base)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    cfg = config.to_dict() if hasattr(config, "to_dict") else {}
    for volatile in ("transformers_version", "_name_or_path", "name_or_path"):
        cfg.pop(volatile, None)
    sums = []
    params = [p for p in getattr(base, "parameters", list)() if p.numel() > 0 and p.device.type != "meta"]
    for p in params[:1] + params[-1:]:
        flat = p.detach().reshape(-1)[:4096].double()
        sums.append(round(float(flat.sum()), 6))
        sums.append(round(float(flat.abs().sum()), 6))
    return {"name_or_path": str(getattr(config, "_name_or_path", "") or type(base).__name__),
            "config": _sha(cfg), "weights": sums}


def bank_spec(bank: Any) -> list[dict[str, Any]]:
    """A JSON-able description of a reward bank: per model its class, name, orientation, description and scalar
    settings (e.g. a path, a target length). Two banks with the same width but other models differ."""
    models = getattr(bank, "models", None)
    if models is None:
        fn = getattr(bank, "__qualname__", type(bank).__qualname__)
        return [{"callable": f"{getattr(bank, '__module__', '')}.{fn}", "names": list(getattr(bank, "names", []))}]
    out = []
    for m in models:
        scalars = {k: v for k, v in sorted(vars(m).items())
                   if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))}
        out.append({"class": f"{type(m).__module__}.{type(m).__qualname__}", "name": m.name,
                    "higher_is_better": bool(m.higher_is_better), **scalars})
    return out


def fingerprint(key: dict[str, Any]) -> str:
    return _sha(key)


def shared_path(key: dict[str, Any]) -> Path | None:
    """``$MULTIDOM_CACHE/baselines/<fingerprint>.json``, or None when the variable is not set."""
    root = os.environ.get(SHARED_ENV)
    return Path(root).expanduser() / "baselines" / f"{fingerprint(key)}.json" if root else None


def read_rows(path: str | Path | None, key: dict[str, Any]) -> dict[str, list]:
    """The cached rows of ``path`` when its fingerprint is ``key``'s; ``{}`` otherwise (missing, other key,
    unreadable)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint(key):
        return {}
    return dict(data.get("rows") or {})


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_rows(path: str | Path, key: dict[str, Any], rows: dict[str, list], world_size: int = 1) -> None:
    """Write the cache atomically; ``world_size`` (how many processes sampled it) is recorded, not keyed."""
    atomic_write_text(path, json.dumps({"key": key, "fingerprint": fingerprint(key), "world_size": world_size,
                                        "rows": rows}))
