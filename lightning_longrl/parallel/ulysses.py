"""Ulysses sequence-parallel attention, registered in transformers' attention interface.

Each rank of a sequence-parallel group holds a contiguous slice of the sequence. Before
attention, an all-to-all trades sequence slices for head groups: every rank then holds all
positions of ``heads / sp`` heads and runs ordinary causal attention over the whole sequence;
a second all-to-all trades back. Both exchanges are differentiable. When there are fewer
key/value heads than ranks, each is copied just often enough for every rank to get one; the
query heads a rank holds then share its key/value heads inside SDPA (grouped-query attention)
instead of each getting a copy.

The model's own code is untouched: :func:`ulysses_attention` is registered under the name
``"ulysses"`` and selected by setting the language model's ``_attn_implementation`` for the
duration of a sequence-parallel forward (:func:`sequence_parallel_attention`).

Between the two exchanges the attention itself runs with PyTorch's SDPA, or with flash-attn when
the model was loaded with a flash-attention implementation (``attn_implementation: auto`` on a GPU
with flash-attn installed): then transformers' own flash-attention function is called on the
gathered heads, with the padding mask when there is left padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_longrl.parallel.collectives import all_to_all

NAME = "ulysses"


@dataclass
class _Active:
    config: object  # the language model's config, whose _attn_implementation is switched
    group: dist.ProcessGroup
    key_padding: Tensor  # [B, L] bool over the whole (padded) sequence, True at real tokens
    padding_only_at_end: bool  # every row is real tokens then padding (no left padding)
    kernel: str  # the model's own attention implementation ("sdpa", "flash_attention_2", ...)


_ACTIVE: _Active | None = None


def ulysses_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Attention over the whole sequence from this rank's slice.

    Args:
        query: ``[B, Hq, l, D]`` for this rank's ``l = L / sp`` positions.
        key, value: ``[B, Hkv, l, D]``.

    Returns:
        ``[B, l, Hq, D]`` attention output for this rank's positions (as transformers expects).
    """
    if _ACTIVE is None:
        raise RuntimeError("ulysses attention runs only inside sequence_parallel_attention(...)")
    group = _ACTIVE.group
    sp = dist.get_world_size(group)
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads % sp:
        raise ValueError(f"{heads} attention heads cannot be split over a sequence-parallel group of {sp}")
    if kv_heads % sp:  # fewer (or indivisible) KV heads than ranks: copy each just enough to give every rank its own
        copies = sp // math.gcd(kv_heads, sp)
        key = key.repeat_interleave(copies, dim=1)
        value = value.repeat_interleave(copies, dim=1)
    # [B, H, l, D] -> [B, H/sp, L, D]: all positions of this rank's heads (and of its share of the KV heads)
    q, k, v = (all_to_all(t, scatter_dim=1, gather_dim=2, group=group) for t in (query, key, value))
    dropout = dropout if module.training else 0.0
    padding = _ACTIVE.key_padding
    grouped = k.shape[1] != q.shape[1]
    if grouped and not _sdpa_takes_grouped_heads(q, masked=not _ACTIVE.padding_only_at_end):
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        grouped = False
    if _ACTIVE.kernel.startswith("flash_attention"):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        mask = None if _ACTIVE.padding_only_at_end else padding.int()
        config = _ACTIVE.config
        config._attn_implementation = _ACTIVE.kernel  # transformers picks the flash kernel by this name
        try:
            out, _ = ALL_ATTENTION_FUNCTIONS[_ACTIVE.kernel](module, q, k, v, mask, dropout=dropout, scaling=scaling,
                                                             is_causal=True)
        finally:
            config._attn_implementation = NAME
        out = out.transpose(1, 2)  # [B, L, H/sp, D] -> [B, H/sp, L, D]
    elif _ACTIVE.padding_only_at_end:
        # causality alone hides trailing padding from every real token: the memory-efficient
        # causal kernels apply (no [L, L] mask, no materialised scores)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=grouped)
    else:
        length = q.shape[2]
        causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        mask = causal[None, None] & padding[:, None, None, :]
        # a padding query would see no key at all (NaN); let it see itself, its output is never used
        mask = mask | torch.eye(length, dtype=torch.bool, device=q.device)[None, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, enable_gqa=grouped)
    # [B, H/sp, L, D] -> [B, H, l, D] -> [B, l, H, D]
    out = all_to_all(out, scatter_dim=2, gather_dim=1, group=group)
    return out.transpose(1, 2).contiguous(), None


def _sdpa_takes_grouped_heads(query: Tensor, masked: bool) -> bool:
    """Whether SDPA runs grouped-query attention here without copying the KV heads: on CPU always;
    on CUDA without a mask (with one, grouped heads fall back to the math kernel, as transformers
    notes, so the heads are repeated instead)."""
    return query.device.type == "cpu" or not masked


def _no_mask(*args, **kwargs) -> None:
    """The model builds no mask for its slice; :func:`ulysses_attention` masks the whole sequence."""
    return None


def register() -> None:
    """Make ``"ulysses"`` a valid attention implementation name (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, ulysses_attention)
    AttentionMaskInterface.register(NAME, _no_mask)


@contextmanager
def sequence_parallel_attention(language_model: nn.Module, group: dist.ProcessGroup, key_padding: Tensor) -> Iterator[None]:
    """Run ``language_model``'s attention layers as Ulysses attention over ``group``.

    Args:
        language_model: the decoder whose ``config._attn_implementation`` is switched.
        group: the sequence-parallel process group.
        key_padding: ``[B, L]`` True at real tokens of the whole padded sequence.
    """
    register()
    config = language_model.config
    key_padding = key_padding.bool()
    only_at_end = bool((key_padding[:, 1:] <= key_padding[:, :-1]).all())
    with _activated(_Active(config, group, key_padding, only_at_end, config._attn_implementation or "sdpa")):
        yield


class _activated(AbstractContextManager):
    """Make ``state`` the active sequence-parallel attention; re-enterable (torch enters a
    checkpoint's recomputation context once per recomputation)."""

    def __init__(self, state: _Active) -> None:
        self.state = state
        self._saved: list[tuple[str, _Active | None]] = []

    def __enter__(self) -> None:
        global _ACTIVE
        self._saved.append((self.state.config._attn_implementation, _ACTIVE))
        self.state.config._attn_implementation = NAME
        _ACTIVE = self.state

    def __exit__(self, *exc) -> None:
        global _ACTIVE
        previous, _ACTIVE = self._saved.pop()
        self.state.config._attn_implementation = previous


def checkpoint_contexts() -> tuple[AbstractContextManager, AbstractContextManager]:
    """``context_fn`` for non-reentrant ``torch.utils.checkpoint`` (gradient checkpointing).

    Backward, and with it the recomputation of checkpointed layers, runs after
    :func:`sequence_parallel_attention` has exited; the recomputation context puts back the
    sequence-parallel attention that the layer's forward ran under (none outside a
    sequence-parallel forward).
    """
    state = _ACTIVE
    return nullcontext(), (_activated(state) if state is not None else nullcontext())
