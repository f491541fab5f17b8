"""Data-parallel training under torchrun: process-group set-up and reductions.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; each rank trains on its own slice of the
B streams (see training.Trainer), DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup_distributed(device_name: str) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPU); return this rank's device."""
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum a number over all ranks (identity when not distributed)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor)


def broadcast_from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's number on every rank (identity when not distributed)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor)
