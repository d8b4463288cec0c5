"""Gradient-norm clipping over parameters some of which are sharded (FSDP2 DTensors) and some
replicated (plain tensors, e.g. the vision tower under ``MRSPStrategy(shard_weights=True)``).
``torch.nn.utils.clip_grad_norm_`` refuses such a mix."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``; return the norm
    before clipping. Sharded gradients contribute their global norm (a collective: every rank
    must call this), replicated ones their (identical) local norm."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    sharded = [g for g in grads if isinstance(g, DTensor)]
    plain = [g for g in grads if not isinstance(g, DTensor)]
    squared = 0.0
    if sharded:
        squared += float(nn.utils.get_total_norm(sharded).full_tensor()) ** 2
    if plain:
        squared += float(nn.utils.get_total_norm(plain)) ** 2
    total = squared ** 0.5
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        with torch.no_grad():
            for grad in grads:
                grad.mul_(scale)
    return total
