"""Parallel video encoding (MR-SP stage 1): each rank of a sequence-parallel group encodes an
even share of a video's frames, and an all-gather gives every rank the whole video's embeddings.
An image is one temporal patch: every rank of the group encodes it (no collective), as does a
video shorter than the group; a text-only batch runs no encoder and no collective. Every rank of a
group holds the same batch, so all of them take the same branches.

In the Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision towers a temporal patch (2 frames) never attends
to another one, and its position embeddings do not depend on its time index, so encoding the
shares separately gives exactly the embeddings of encoding them together (Qwen3-VL's deepstack
features included).
When the temporal patches do not divide evenly, the last one is repeated to fill the last share
and what it produced is dropped after the gather.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_longrl.models.video_lm import VideoEmbeddings, VideoLanguageModel
from lightning_longrl.parallel.collectives import all_gather


def sp_encode_video(model: VideoLanguageModel, pixel_values: Tensor, grid_thw: Tensor,
                    group: dist.ProcessGroup | None, seconds_per_patch: Tensor | None = None) -> VideoEmbeddings:
    """:meth:`VideoLanguageModel.encode_video` with the frames split across ``group``.

    Args:
        pixel_values: ``[P, C*T*p*p]`` patches of the batch's visual items, in order.
        grid_thw: ``[V, 3]`` patch grid of each item (videos and images).
        group: the sequence-parallel group; ``None``: this process encodes everything itself.
        seconds_per_patch: ``[V]`` kept with the embeddings (Qwen2.5-VL M-RoPE timing).

    Returns:
        the embeddings of all items, identical on every rank of the group.
    """
    if group is None or grid_thw.shape[0] == 0:
        return model.encode_video(pixel_values, grid_thw, seconds_per_patch)
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    merge = model.spatial_merge_size ** 2
    outputs, deep = [], []
    for pixels, (t, h, w) in zip(pixel_values.split((grid_thw.prod(-1)).tolist()), grid_thw.tolist()):
        if t < size:  # an image, or a video shorter than the group: too short to share
            whole = model.encode_video(pixels, torch.tensor([[t, h, w]], device=grid_thw.device))
            outputs.append(whole.embeds)
            deep.append(list(whole.deepstack))
            continue
        per_frame = h * w  # patch rows of one temporal patch
        share = -(-t // size)
        frames = pixels.view(t, per_frame, -1)
        if share * size > t:  # repeat the last temporal patch to fill the last share
            frames = torch.cat([frames, frames[-1:].expand(share * size - t, -1, -1)])
        mine = frames[rank * share : (rank + 1) * share].reshape(share * per_frame, -1)
        local = model.encode_video(mine, torch.tensor([[share, h, w]], device=grid_thw.device))
        rows = t * per_frame // merge
        # with gradients, for a trainable tower
        outputs.append(all_gather(local.embeds, dim=0, group=group)[:rows])
        deep.append([all_gather(d, dim=0, group=group)[:rows] for d in local.deepstack])
    deepstack = tuple(torch.cat(level) for level in zip(*deep)) if deep and deep[0] else ()
    return VideoEmbeddings(torch.cat(outputs), grid_thw, deepstack, seconds_per_patch)
