"""A temporal-contrast reward from the cached video embeddings (Video-R1's T-GRPO).

Besides its G responses on the video, each question is also answered G times on the same video
with its frames shuffled. With ``p`` and ``p_shuffled`` the shares of right answers on the two,
every right answer on the ordered video earns ``bonus`` when ``p >= margin * p_shuffled``: the
model is paid for answers that rely on the order of events, not for those a bag of frames gives
as well. The shuffled video is built by permuting the cached embeddings' temporal patches
(:meth:`~lightning_longrl.models.video_lm.VideoEmbeddings.permute_frames`), which equals encoding
the shuffled frames because the vision tower encodes each temporal patch on its own; the
positions the language model gives the video stay in order, as for any video. So the vision
encoder still runs once per video per step. Responses on the shuffled video only score; they are
not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_longrl.models.video_lm import VideoEmbeddings


@dataclass
class TemporalContrastConfig:
    """Video-R1's temporal reward (module docstring); off by default."""

    enabled: bool = False
    bonus: float = 0.3
    """Added to each right answer on the ordered video when order helped (Video-R1: 0.3)."""
    margin: float = 0.8
    """Order helped when ``p >= margin * p_shuffled`` (Video-R1: 0.8)."""

    def __post_init__(self) -> None:
        if self.bonus < 0:
            raise ValueError(f"temporal_contrast bonus must be >= 0, got {self.bonus}")
        if self.margin < 0:
            raise ValueError(f"temporal_contrast margin must be >= 0, got {self.margin}")


def shuffle_frames(videos: list[VideoEmbeddings], generator: torch.Generator) -> list[VideoEmbeddings]:
    """Each video with its temporal patches in a random order other than the original (when it has
    more than one); image and text-only questions are left as they are (no order to break)."""
    out = []
    for video in videos:
        if video.num_items != 1:
            out.append(video)
            continue
        t = int(video.grid_thw[0, 0])
        identity = torch.arange(t, device=generator.device)
        order = identity
        if t > 1:
            while torch.equal(order, identity):
                order = torch.randperm(t, generator=generator, device=generator.device)
        out.append(video.permute_frames(order))
    return out


def temporal_bonus(accuracy: Tensor, shuffled_accuracy: Tensor, bonus: float, margin: float) -> Tensor:
    """``[B, G]`` bonus of each ordered-video response.

    Args:
        accuracy: ``[B, G]`` accuracy (0/1) of the responses on the ordered video.
        shuffled_accuracy: ``[B, G']`` accuracy of the responses on the shuffled video.
    """
    p, p_shuffled = accuracy.float().mean(1, keepdim=True), shuffled_accuracy.float().mean(1, keepdim=True)
    helped = p >= margin * p_shuffled
    return bonus * accuracy.float() * helped.float()
