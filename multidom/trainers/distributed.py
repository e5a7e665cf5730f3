"""Gathering clouds across processes (DESIGN.md §6): every dominance is measured on the cloud of
all processes, and a 2-process run must equal one process on the concatenated batch."""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["world", "gather_cat"]


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_cat(t: torch.Tensor, *, differentiable: bool = False) -> tuple[torch.Tensor, slice]:
    """Concatenate ``t`` (shape ``(n_r, ...)``, ``n_r`` may differ per rank) along dim 0 over ranks.

    Returns the global tensor and the slice of it that is this rank's. With
    ``differentiable=True`` gradients flow back to every rank's piece
    (``torch.distributed.nn.functional.all_gather``); otherwise the result is detached.
    """
    rank, size = world()
    if size == 1:
        return t, slice(0, t.shape[0])
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = max(sizes) - t.shape[0]
    padded = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t
    if differentiable:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(size)]
        dist.all_gather(parts, padded.detach().contiguous())
    out = torch.cat([p[:s] for p, s in zip(parts, sizes)])
    start = sum(sizes[:rank])
    return out, slice(start, start + sizes[rank])
