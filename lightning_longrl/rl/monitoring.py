"""What a GRPO step reports: wall time per phase and thumbnails of the frames a rollout saw."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import Tensor


class PhaseTimer:
    """Exclusive wall time per phase: a nested phase pauses the one around it, so the phases of
    a step add up to the step's time (``encode`` inside ``reference`` counts as ``encode``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, phase: str):
        now = time.perf_counter()
        if self._stack:
            outer, began = self._stack[-1]
            self.seconds[outer] += now - began
        self._stack.append((phase, now))
        try:
            yield
        finally:
            name, began = self._stack.pop()
            end = time.perf_counter()
            self.seconds[name] += end - began
            if self._stack:
                self._stack[-1] = (self._stack[-1][0], end)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds


def frames_from_patches(
    pixel_values: Tensor,
    grid_thw: Tensor,
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
    mean: list[float],
    std: list[float],
) -> Tensor:
    """Undo the Qwen-VL video processor: flattened normalised patches of one video back to
    ``[F, H, W, 3]`` uint8 frames (``F = t * temporal_patch_size``), exactly what the model saw.

    Args:
        pixel_values: ``[t*h*w, C*temporal_patch_size*patch_size**2]`` patches of one video.
        grid_thw: ``[3]`` its patch grid.
    """
    t, h, w = (int(v) for v in grid_thw.tolist())
    m, p, tp = merge_size, patch_size, temporal_patch_size
    channels = pixel_values.shape[-1] // (tp * p * p)
    x = pixel_values.float().reshape(t, h // m, w // m, m, m, channels, tp, p, p)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(t * tp, channels, h * p, w * p)
    x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def thumbnail_grid(frames: Tensor, max_frames: int = 16, columns: int = 8) -> Tensor:
    """Up to ``max_frames`` evenly spaced frames ``[F, H, W, 3]`` tiled into one ``[3, H', W']``
    uint8 image (TensorBoard's CHW layout), ``columns`` per row, with no border."""
    from torchvision.utils import make_grid

    count = frames.shape[0]
    picks = torch.linspace(0, count - 1, steps=min(max_frames, count)).round().long()
    chosen = frames[picks].permute(0, 3, 1, 2)  # [n, 3, H, W]
    return make_grid(chosen, nrow=min(columns, len(picks)), padding=0)
