"""Data parallelism for the guided step: averaging a flat gradient over ranks, and the module under a DDP wrapper.

Owns the one rule that keeps guidance correct under DDP (torchrun, accelerate): every gradient the guidance computes
goes through ``torch.autograd.grad`` on the *unwrapped* module, which DDP's hooks never see, so it is averaged here
explicitly (``all_reduce_mean``) before it is used: g before v is formed or g is reshaped, the shifted gradient of the
finite difference (every rank takes the same shifted step, computes its local shifted gradient, and the average is
the global batch's), and the exact H·v. The result is identical on every rank, so the parameters stay in lockstep.
Plain (unguided) steps use DDP's own all-reduce through ``loss.backward()`` on the wrapped model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def world_size(group=None) -> int:
    """The number of ranks of ``group`` (1 when torch.distributed is not initialised)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1
    return torch.distributed.get_world_size(group)


def all_reduce_mean(group=None) -> Callable[[Tensor], Tensor]:
    """A function that returns the average of a flat tensor over the ranks of ``group`` (a new tensor; the input is
    left as it is). Every rank must call it with a tensor of the same shape, in the same order."""
    def reduce(v: Tensor) -> Tensor:
        out = v.detach().clone()
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM, group=group)
        return out / world_size(group)

    return reduce


def is_ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if is_ddp(model) else model
