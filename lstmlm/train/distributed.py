"""Data-parallel training under torchrun: process-group set-up and reductions.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT;
each rank trains on its own slice of the B streams (see training.Trainer), and
DistributedDataParallel averages the gradients. Every helper here is the identity when no
process group is running, so the single-process path needs no special cases.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from lstmlm.core.errors import LstmlmError
from lstmlm.core.machine import pick_device


def setup_distributed(device_name: str, timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPU); return this rank's device."""
    timeout = timedelta(minutes=timeout_minutes)
    if pick_device(device_name).type == "cuda":
        # Bind the GPU before NCCL starts, so its communicator lands on this rank's device.
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= torch.cuda.device_count():
            raise LstmlmError(f"local rank {local_rank} has no GPU: this machine has "
                              f"{torch.cuda.device_count()}; start at most that many "
                              "processes per machine (train.nproc, --nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
        return device
    dist.init_process_group("gloo", timeout=timeout)
    return torch.device("cpu")


def cleanup_distributed() -> None:
    """Leave the process group (no-op when there is none)."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def local_world_size() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum a number over all ranks (identity when not distributed)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor)


def all_reduce_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place and return it (identity when not distributed).

    No host sync: on CUDA the reduction is queued on the stream like any kernel.
    """
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def broadcast_from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's number on every rank (identity when not distributed)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor)


def rank0_decides(flag: bool, device: torch.device) -> bool:
    """Rank 0's yes/no on every rank, so that all ranks stop (or go on) together."""
    return bool(broadcast_from_rank0(1.0 if flag else 0.0, device))


def all_agree(value: float, device: torch.device) -> bool:
    """Whether every rank holds rank 0's ``value``; the same answer on every rank."""
    if not is_distributed():
        return True
    differs = broadcast_from_rank0(value, device) != value
    return all_reduce_sum(float(differs), device) == 0


def wrap_model(net: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """DistributedDataParallel when there are several processes, else the module itself."""
    if world_size == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    # DDP broadcasts rank 0's weights here and averages gradients in backward. An adaptive
    # softmax leaves a tail cluster unused when no target of this rank's batch falls in it:
    # DDP must look for unused parameters then.
    return DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=net.model.config.output == "adaptive")
