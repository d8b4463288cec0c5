"""Group-relative advantages (GRPO) and the online filter of uninformative groups."""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """``(r - mean) / (std + eps)`` within each group of responses to the same question.

    Args:
        rewards: ``[B, G]`` rewards of G responses to each of B questions.
        eps: added to the (unbiased) standard deviation.

    Returns:
        ``[B, G]`` advantages. A group whose rewards are all equal gets exactly 0 (not NaN),
        also for a group of one response.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    rewards = rewards.double()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    flat = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    if rewards.shape[1] < 2:
        return torch.zeros_like(rewards, dtype=torch.float32)
    std = rewards.std(dim=1, keepdim=True)  # unbiased, as Long-RL / verl compute it
    return torch.where(flat, torch.zeros_like(centred), centred / (std + eps)).float()


def informative_groups(accuracy: Tensor) -> Tensor:
    """``[B]`` True for groups whose accuracy is mixed (neither all right nor all wrong).

    Dynamic sampling keeps only these: a group with equal outcomes gives zero advantages and so
    no policy gradient.

    Args:
        accuracy: ``[B, G]`` accuracy reward of each response.
    """
    return ~(accuracy == accuracy[:, :1]).all(dim=1)
