"""Learning-rate schedules shared by the training stages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class LRSchedule:
    """Warmup then constant, cosine or linear decay, stepped every optimizer step."""

    warmup_steps: int = 0
    """Steps of linear warmup from 0 to the optimizer's learning rate."""
    decay: Literal["constant", "cosine", "linear"] = "constant"
    """Shape after warmup, reaching ``min_lr_ratio`` at the last step (``total_steps - 1``)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak."""

    def factor(self, step: int, total_steps: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant" or total_steps <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, total_steps - 1 - self.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1 - progress
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * shape

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.factor(step, total_steps))
