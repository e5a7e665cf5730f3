"""Gathering clouds across processes (DESIGN.md §6): every dominance is measured on the cloud of
all processes, and a 2-process run must equal one process on the concatenated batch."""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["world", "gather_cat", "gather_to_cpu", "gather_padded", "comm_device", "shard", "gather_objects",
           "max_over_ranks"]


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


def comm_device() -> torch.device:
    """Where collectives need their tensors: the current CUDA device under NCCL, else the CPU."""
    if world()[1] > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_to_cpu(t: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """:func:`gather_cat` on the collective's device; the result comes back on the CPU."""
    out, local = gather_cat(t.to(comm_device()))
    return out.cpu(), local


def gather_padded(pts: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather ``(n_r, M_r, d)`` points and ``(n_r, M_r)`` masks over ranks, padding ``M`` to the largest
    (padding is NaN with mask False)."""
    if world()[1] > 1:
        m = torch.tensor([pts.shape[1]], device=comm_device())
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
        pad = int(m) - pts.shape[1]
        if pad:
            pts = torch.cat([pts, pts.new_full((pts.shape[0], pad, pts.shape[2]), float("nan"))], 1)
            mask = torch.cat([mask, mask.new_zeros((mask.shape[0], pad))], 1)
    return gather_to_cpu(pts)[0], gather_to_cpu(mask.to(torch.uint8))[0].bool()


def shard(n: int) -> tuple[list[int], int]:
    """This rank's share of ``n`` items -- ``rank, rank + world, ...`` -- and the share size every rank pads to
    (``ceil(n / world)``), so that all ranks run the same number of collective forward passes (ZeRO-3 /
    FSDP / synced generation would hang otherwise)."""
    rank, size = world()
    return list(range(rank, n, size)), -(-n // size)


def gather_objects(obj: object) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` on one process)."""
    if world()[1] == 1:
        return [obj]
    out: list = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def max_over_ranks(value: int) -> int:
    """The largest ``value`` over ranks."""
    if world()[1] == 1:
        return int(value)
    t = torch.tensor([int(value)], device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)
