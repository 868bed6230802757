"""Multi-process training: `torchrun --nproc_per_node N -m edgenas train ...`.

Every process holds a full supernet and trains the same subnets (identically seeded samplers) on
its own shard of each batch. After the backward passes of a step, gradients are averaged in one of
two ways (`train.grad_sync`):

- "allreduce": one all-reduce of all gradients flattened into a single buffer. A parameter that the
  step's subnets did not use has no gradient on any rank (same subnets everywhere), so it is simply
  left out; the stop and NaN flags ride along in the same buffer.
- "ddp": DistributedDataParallel with find_unused_parameters=True (bucketed all-reduce overlapped
  with backward, plus a graph traversal every step to find the unused parameters).

Rank 0 writes checkpoints and logs. BatchNorm running statistics are averaged over the ranks before
validation and checkpoints, so every rank holds exactly what the checkpoint holds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down
    device: torch.device = torch.device("cpu")  # where collectives' tensors live (cuda for nccl)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sync_step(self, params: list[nn.Parameter], flags: list[float], average_grads: bool = True) -> list[float]:
        """Average the gradients of `params` over ranks (those without a gradient are skipped) and
        return `flags` summed over ranks. With average_grads=False only the flags travel (DDP mode)."""
        if not self.active:
            return flags
        grads = [p.grad for p in params if p.grad is not None] if average_grads else []
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor(flags, dtype=grads[0].dtype if grads else torch.float32,
                                                                       device=grads[0].device if grads else self.device)])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g)).div_(self.world)
            offset += n
        return [float(v) for v in flat[offset:].tolist()]

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over ranks."""
        if not self.active:
            return
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        if not bufs:
            return
        flat = torch.cat([b.reshape(-1) for b in bufs])
        dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for b in bufs:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()

    def broadcast_module(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if self.active:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def gather(self, obj):
        """A list of every rank's `obj` (on every rank)."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def setup(device: str) -> Dist:
    """Join the process group torchrun (or the caller) set up; a single process when there is none."""
    if dist.is_available() and dist.is_initialized():
        d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns_group=True)
    else:
        d = Dist()
    return d
