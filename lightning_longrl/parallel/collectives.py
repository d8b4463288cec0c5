"""Differentiable collectives over a sub-group, for NCCL and gloo alike.

``torch.distributed.nn.functional`` emulates all-to-all on gloo with scatters whose source is
taken as a global rank, which fails inside any group that does not start at global rank 0 (a
second sequence-parallel group); these versions use ``dist.all_to_all`` and ``dist.all_reduce``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, scatter_dim: int, gather_dim: int, group: dist.ProcessGroup) -> Tensor:
        ctx.dims, ctx.group = (scatter_dim, gather_dim), group
        size = dist.get_world_size(group)
        inputs = [t.contiguous() for t in tensor.chunk(size, dim=scatter_dim)]
        outputs = [torch.empty_like(inputs[0]) for _ in range(size)]
        dist.all_to_all(outputs, inputs, group=group)
        return torch.cat(outputs, dim=gather_dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        scatter_dim, gather_dim = ctx.dims
        return _AllToAll.apply(grad, gather_dim, scatter_dim, ctx.group), None, None, None


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, dim: int, group: dist.ProcessGroup) -> Tensor:
        ctx.dim, ctx.group = dim, group
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        # every rank's copy of the gathered tensor fed its own loss: sum them, keep this rank's part
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        size, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return grad.chunk(size, dim=ctx.dim)[rank], None, None


def all_to_all(tensor: Tensor, scatter_dim: int, gather_dim: int, group: dist.ProcessGroup) -> Tensor:
    """Split ``tensor`` along ``scatter_dim`` over the group's ranks (piece r goes to rank r) and
    concatenate the pieces received, in rank order, along ``gather_dim``."""
    return _AllToAll.apply(tensor, scatter_dim, gather_dim, group)


def all_gather(tensor: Tensor, dim: int, group: dist.ProcessGroup) -> Tensor:
    """The group's tensors concatenated in rank order along ``dim`` (equal shapes on every rank)."""
    return _AllGather.apply(tensor, dim, group)
