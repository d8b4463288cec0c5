"""Advantages of a step's responses from their rewards, and the online filter of uninformative groups.

Every estimator takes the rewards ``[B, G]`` of G responses to each of B questions and returns
one advantage per response, ``[B, G]`` (the same for all of a response's tokens):

* ``grpo``: ``(r - mean) / (std + eps)`` within each group (GRPO, the paper's equation 2).
* ``group_mean``: ``r - mean`` within each group, no division by the standard deviation (Dr. GRPO:
  the division favours questions whose group nearly agrees, too easy or too hard).
* ``rloo``: ``r_i`` minus the mean of the *other* G - 1 rewards of its group (REINFORCE leave-one-out;
  equal to ``G / (G - 1) * (r - mean)``).
* ``reinforce_pp``: ``r - mean`` within each group, then whitened over all B x G responses of the
  batch (REINFORCE++ with a group baseline, verl's ``reinforce_plus_plus_baseline``; verl whitens
  over tokens, this over responses, so every response weighs the same whatever its length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

AdvantageEstimator = Literal["grpo", "group_mean", "rloo", "reinforce_pp"]
ESTIMATORS: tuple[str, ...] = ("grpo", "group_mean", "rloo", "reinforce_pp")


@dataclass
class AdvantageConfig:
    """Which advantage estimator turns a step's rewards into advantages."""

    estimator: AdvantageEstimator = "grpo"
    """``grpo``, ``group_mean`` (Dr. GRPO), ``rloo`` or ``reinforce_pp`` (module docstring)."""
    eps: float = 1e-6
    """Added to the standard deviation that ``grpo`` and ``reinforce_pp`` divide by."""

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"advantage estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if self.eps < 0:
            raise ValueError(f"advantage eps must be >= 0, got {self.eps}")

    def __call__(self, rewards: Tensor) -> Tensor:
        return compute_advantages(rewards, self.estimator, self.eps)


def compute_advantages(rewards: Tensor, estimator: AdvantageEstimator = "grpo", eps: float = 1e-6) -> Tensor:
    """``[B, G]`` float32 advantages of ``rewards`` ``[B, G]`` by ``estimator`` (module docstring).

    A group whose rewards are all equal gets exactly 0 from every estimator (not NaN), as does a
    group of one response (there is no baseline to compare it with).
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    if estimator == "grpo":
        return group_advantages(rewards, eps)
    rewards = rewards.double()
    g = rewards.shape[1]
    if g < 2:
        return torch.zeros_like(rewards, dtype=torch.float32)
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    centred = torch.where(_flat(rewards), torch.zeros_like(centred), centred)
    if estimator == "group_mean":
        return centred.float()
    if estimator == "rloo":
        return (centred * (g / (g - 1))).float()
    if estimator == "reinforce_pp":
        if centred.numel() < 2:
            return torch.zeros_like(centred, dtype=torch.float32)
        whitened = (centred - centred.mean()) / (centred.std() + eps)
        return whitened.float()
    raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


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
    if rewards.shape[1] < 2:
        return torch.zeros_like(rewards, dtype=torch.float32)
    std = rewards.std(dim=1, keepdim=True)  # unbiased, as Long-RL / verl compute it
    return torch.where(_flat(rewards), torch.zeros_like(centred), centred / (std + eps)).float()


def _flat(rewards: Tensor) -> Tensor:
    """``[B, 1]`` True where a group's rewards are all equal (exactly, so no rounding residue)."""
    return (rewards == rewards[:, :1]).all(dim=1, keepdim=True)


def informative_groups(accuracy: Tensor) -> Tensor:
    """``[B]`` True for groups whose accuracy is mixed (neither all right nor all wrong).

    Dynamic sampling keeps only these: a group with equal outcomes gives zero advantages and so
    no policy gradient.

    Args:
        accuracy: ``[B, G]`` accuracy reward of each response.
    """
    return ~(accuracy == accuracy[:, :1]).all(dim=1)
