"""Two attention kernels that do what transformers' SDPA path does, in fewer, cheaper calls.

**The vision tower** (:data:`PACKED_VISION`). The Qwen-VL vision towers attend within
independent chunks of their packed patch sequence (a temporal patch of one frame pair, or one
window of it), given by ``cu_seqlens``. Without flash-attn, transformers loops over the chunks
and calls SDPA once per chunk: a 64-frame video is 32 calls per layer, an 8,192-frame one 4,096,
each with its own kernel launch and autograd node (512 calls per step of the demo's SFT).
:func:`packed_sdpa_attention` groups the chunks by length and runs one SDPA call per distinct
length on a ``[chunks, heads, length, dim]`` batch; every chunk still attends to exactly its own
keys. transformers hands ``cu_seqlens`` to the attention function only on its flash-attention
branch, which it takes when the implementation's name contains "flash"; hence the name.

**The language model on CPU** (:data:`GQA_SDPA`). With an attention mask (left-padded prompts,
every decoding step), transformers repeats the key/value heads to the query heads before SDPA,
a copy of the whole KV cache per layer and step, because on CUDA a masked grouped-query call
falls back to the math kernel. On CPU SDPA takes the mask with ``enable_gqa`` directly (3 to 5
times faster for a decoding step of the demo's model, with equal results):
:func:`gqa_sdpa_attention` does that on CPU and what transformers does elsewhere.

Both are registered in transformers' attention interface and set on the loaded model's configs
by :func:`use_fast_attention` when they run SDPA; flash-attn and eager are left alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKED_VISION = "flash_packed_sdpa"
"""Vision-tower kernel; "flash" in the name makes transformers hand over ``cu_seqlens``."""
GQA_SDPA = "sdpa_gqa"
"""Language-model kernel: SDPA with grouped-query attention under a mask on CPU."""


def packed_sdpa_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: Tensor | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Non-causal attention within the chunks of a packed sequence.

    Args:
        query, key, value: ``[1, H, N, D]``, the packed sequence of all chunks.
        cu_seq_lens_q: ``[C + 1]`` chunk boundaries (the same for keys).

    Returns:
        ``[1, N, H, D]`` (transformers' layout for attention outputs) and no weights.
    """
    if cu_seq_lens_q is None:
        raise ValueError(f"{PACKED_VISION} attention needs the chunk boundaries (cu_seqlens) of the vision tower")
    _, heads, total, dim = query.shape
    starts, lengths = cu_seq_lens_q[:-1], cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [N, H, D]
    distinct = lengths.unique().tolist()
    if len(distinct) == 1:  # the usual video case: every chunk the same size, no gather needed
        n, size = lengths.numel(), int(distinct[0])
        batched = (t.view(n, size, heads, dim).transpose(1, 2) for t in (q, k, v))  # [n, H, size, D]
        out = F.scaled_dot_product_attention(*batched, dropout_p=dropout, scale=scaling)
        return out.transpose(1, 2).reshape(1, total, heads, dim), None
    out = q.new_empty(total, heads, dim)
    for size in distinct:  # one call per distinct chunk length
        first = starts[lengths == size]
        index = (first[:, None] + torch.arange(int(size), device=q.device)).reshape(-1)  # [n * size]
        n = first.numel()
        batched = (t[index].view(n, int(size), heads, dim).transpose(1, 2) for t in (q, k, v))
        part = F.scaled_dot_product_attention(*batched, dropout_p=dropout, scale=scaling)
        out = out.index_copy(0, index, part.transpose(1, 2).reshape(-1, heads, dim))
    return out.unsqueeze(0), None


def gqa_sdpa_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Causal decoder attention; on CPU grouped-query heads are never copied.

    Args:
        query: ``[B, Hq, q, D]``; key, value: ``[B, Hkv, k, D]``.
        attention_mask: boolean or additive ``[B, 1, q, >= k]``, or None for plain causal attention.

    Returns:
        ``[B, q, Hq, D]`` and no weights.
    """
    if query.device.type != "cpu":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = query.shape[2] > 1 and attention_mask is None and causal
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :, : key.shape[2]]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
                                         is_causal=causal, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make :data:`PACKED_VISION` and :data:`GQA_SDPA` valid attention implementations (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_VISION, packed_sdpa_attention)
    AttentionInterface.register(GQA_SDPA, gqa_sdpa_attention)
    # masks are built as for SDPA (an unregistered name would get no mask at all)
    AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)


def use_fast_attention(hf_model: nn.Module) -> list[str]:
    """Switch the SDPA parts of a loaded Qwen-VL model to the kernels above.

    Returns:
        The parts switched (``"vision"``, ``"language"``); parts on flash-attn or eager are kept.
    """
    inner = getattr(hf_model, "model", hf_model)
    switched = []
    for part, module, name in (("vision", getattr(inner, "visual", None), PACKED_VISION),
                               ("language", getattr(inner, "language_model", None), GQA_SDPA)):
        if module is not None and module.config._attn_implementation == "sdpa":
            register()
            module.config._attn_implementation = name
            switched.append(part)
    return switched
