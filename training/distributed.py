"""Data parallelism under ``torchrun``: process group, gradient all-reduce, rank-0-only writes.

Every command calls :func:`init_distributed`; without torchrun's environment it is a one-process
context and every collective is a no-op. Under torchrun it joins the process group (NCCL on
GPUs, gloo on CPUs) and each rank drives one device.

Gradients are averaged with one flat all-reduce per optimizer step instead of wrapping the model
in ``DistributedDataParallel``: a sandwich step runs four different subnets before a single
optimizer step, so DDP would need ``no_sync`` plus ``find_unused_parameters`` (the largest
subnet never touches the kernel transforms) for exactly the same averaged gradient. Parameters
whose gradient is ``None`` on a rank contribute zeros, so ranks stay identical.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn

from oqatnets.errors import InvalidArgumentError

__all__ = ['DistContext', 'init_distributed', 'all_reduce_gradients', 'broadcast_buffers', 'all_reduce_sum']


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))

    @property
    def is_main(self) -> bool:
        """Only the main rank writes files and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()


def init_distributed(*, device: 'str | None' = None, join_group: bool = True) -> DistContext:
    """Join torchrun's process group if its environment is set; otherwise a single-process context.

    ``device`` forces ``cpu`` or ``cuda``; by default each rank takes GPU ``LOCAL_RANK`` when
    CUDA is available and the CPU otherwise. ``join_group=False`` is for rank-0-only work
    (search, calibration, zoo build): no process group is made, so the other ranks exit at once
    instead of waiting in a barrier that NCCL's watchdog kills after 10 minutes. NCCL groups are
    bound to this rank's GPU (``device_id``), so collectives need no device guess.
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank, local_rank = int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0'))
    asked = _parse_device(device)
    use_cuda = torch.cuda.is_available() if asked is None else asked.type == 'cuda'
    if use_cuda and not torch.cuda.is_available():
        raise InvalidArgumentError('--device cuda was asked for but CUDA is not available; use --device cpu')
    if use_cuda:
        index = local_rank if asked is None or asked.index is None else asked.index
        if world_size > 1 and index != local_rank:
            raise InvalidArgumentError(f'--device {device}: under torchrun each rank takes GPU LOCAL_RANK '
                                       f'({local_rank}); pass --device cuda')
        torch.cuda.set_device(index)
        dev = torch.device('cuda', index)
    else:
        dev = torch.device('cpu')
    if world_size > 1 and join_group and not dist.is_initialized():
        if use_cuda:
            dist.init_process_group(backend='nccl', device_id=dev)
        else:
            dist.init_process_group(backend='gloo')
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def _parse_device(device: 'str | None') -> 'torch.device | None':
    """``device`` as a CPU or CUDA torch.device (None: choose); other kinds are refused."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f'--device {device!r} is not a device; use cpu, cuda or cuda:N') from None
    if parsed.type not in ('cpu', 'cuda'):
        raise InvalidArgumentError(f'--device {device}: training runs on cpu or cuda[:N] only')
    return parsed


def all_reduce_gradients(model: nn.Module, ctx: DistContext) -> None:
    """Average every parameter's gradient over the ranks with one flat all-reduce."""
    if not ctx.distributed:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def broadcast_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank, as DDP does."""
    if ctx.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor of counters over the ranks (returns it unchanged on one process)."""
    if ctx.distributed:
        dist.all_reduce(values)
    return values
