"""Multimodal rotary position ids (M-RoPE) for Qwen-VL prompts with videos and images.

Each token gets three position ids (temporal, height, width). Text tokens carry the same value
on all three axes and count up by one. A video block takes its patch grid: height and width
indices, and a temporal index that Qwen2.5-VL scales by ``tokens_per_second x
second_per_grid_ts`` (so positions follow real time) and Qwen2-VL does not. Text after a vision
block continues from the largest position used so far plus one.

That last rule is the one Qwen's reference code and vLLM use. transformers 5.19's
``get_rope_index`` instead continues from ``start + max(h, w) / merge``, which ignores the
temporal extent of a video, so after a long video the following text reuses positions the video
already holds, and a teacher-forced forward disagrees with that library's own incremental
generation. This package computes positions itself so that training, its own generation and vLLM
rollouts all see the same positions (see ``docs/architecture.md``).

Qwen3-VL writes each temporal patch as its own block between timestamp texts; each block is a
one-step grid, which the same rule covers. An image is a block of one temporal patch (the same
rule again; its temporal index is 0 whatever the scale).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _runs(mask: Tensor) -> list[tuple[int, int]]:
    """``[start, end)`` of every run of True in a 1-D bool tensor."""
    padded = torch.cat([mask.new_zeros(1), mask, mask.new_zeros(1)]).int()
    edges = torch.nonzero(padded.diff()).flatten().tolist()
    return list(zip(edges[0::2], edges[1::2]))


def mrope_position_ids(
    input_ids: Tensor,
    attention_mask: Tensor,
    vision_token_ids: int | Sequence[int],
    grid_thw: Tensor,
    spatial_merge_size: int,
    temporal_scale: Tensor | None = None,
    frame_blocks: bool = False,
) -> Tensor:
    """M-RoPE position ids for a batch of sequences with videos and images.

    Args:
        input_ids: ``[B, L]`` token ids; padding may be on either side.
        attention_mask: ``[B, L]``; padding positions get position 0.
        vision_token_ids: ids of ``<|video_pad|>`` (and ``<|image_pad|>``).
        grid_thw: ``[V, 3]`` patch grid of every visual item, in order of appearance.
        spatial_merge_size: patches merged per side into one token.
        temporal_scale: ``[V]`` multiplier of the temporal index (``tokens_per_second x
            second_per_grid_ts`` for Qwen2.5-VL); ``None`` means 1.
        frame_blocks: each temporal patch is a separate block of tokens (Qwen3-VL).

    Returns:
        ``[3, B, L]`` long tensor.

    Raises:
        ValueError: the video tokens do not match the grids.
    """
    batch, length = input_ids.shape
    device = input_ids.device
    out = torch.zeros(3, batch, length, dtype=torch.long, device=device)
    grids = grid_thw.tolist()
    vision = torch.tensor([vision_token_ids] if isinstance(vision_token_ids, int) else list(vision_token_ids),
                          device=device)
    scales = [1.0] * len(grids) if temporal_scale is None else [float(s) for s in temporal_scale.tolist()]
    video, frames_done = 0, 0  # next video, and temporal patches of it already placed
    for row in range(batch):
        keep = attention_mask[row].bool()
        ids = input_ids[row][keep]
        pieces: list[Tensor] = []
        next_pos, cursor = 0, 0
        for start, end in _runs(torch.isin(ids, vision)):
            if start > cursor:  # text before the block
                pieces.append(torch.arange(next_pos, next_pos + start - cursor, device=device).expand(3, -1))
                next_pos += start - cursor
            if video >= len(grids):
                raise ValueError(f"row {row}: more video blocks than the {len(grids)} grids given")
            t, h, w = grids[video]
            h, w = h // spatial_merge_size, w // spatial_merge_size
            steps = 1 if frame_blocks else t
            if end - start != steps * h * w:
                raise ValueError(
                    f"row {row}: a video block of {end - start} tokens does not match grid {grids[video]} "
                    f"({steps * h * w} tokens expected)"
                )
            tt = (torch.arange(steps, device=device, dtype=torch.float64) * scales[video]).long()
            grid = torch.stack(torch.meshgrid(tt, torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"))
            block = grid.reshape(3, -1) + next_pos
            pieces.append(block)
            next_pos = int(block.max()) + 1
            cursor = end
            frames_done += steps
            if frames_done >= t:
                video, frames_done = video + 1, 0
        if cursor < len(ids):
            pieces.append(torch.arange(next_pos, next_pos + len(ids) - cursor, device=device).expand(3, -1))
        if pieces:
            out[:, row, keep] = torch.cat(pieces, dim=1)
    if video != len(grids) or frames_done:
        raise ValueError(f"the prompts hold video tokens for {video} of {len(grids)} videos")
    return out
