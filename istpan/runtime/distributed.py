"""Distributed data parallel under `torchrun`: process-group set-up and the few collectives the engine needs.

Everything here is a no-op in a single process, so the training loop reads the same with and without DDP:

    torchrun --nproc_per_node 2 -m istpan.cli.main train --config configs/ucf101.yaml        # one machine
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 -m istpan.cli.main train ...

The backend is NCCL when the process has a CUDA device and gloo otherwise (CPU runs, CI, the tests).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_objects",
    "barrier",
    "cleanup_distributed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "reduce_sum",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Only rank 0 writes files, logs and progress bars."""
    return get_rank() == 0


def init_distributed(device: torch.device) -> bool:
    """Join the process group that `torchrun` describes in the environment; return whether this run is distributed.

    Called once by `train`; a process started without torchrun (no WORLD_SIZE) stays single-process.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def cleanup_distributed() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (counts, loss sums) in float64, so large counts stay exact."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (pickled; used once per evaluation for per-clip scores)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
