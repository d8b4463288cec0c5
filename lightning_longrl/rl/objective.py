"""The GRPO objective (equation 1 of the paper): clipped policy ratio plus KL to a reference.

All functions work on per-token tensors ``[N, T]`` of N responses of up to T tokens with a
``mask`` marking real response tokens, so they can be checked against hand-computed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]
Aggregation = Literal["token_mean", "sequence_mean"]


@dataclass
class GRPOLossConfig:
    """Clipping, KL and aggregation of the GRPO loss."""

    clip_low: float = 0.2
    """Lower clip: the ratio is held above ``1 - clip_low``."""
    clip_high: float = 0.3
    """Upper clip: the ratio is held below ``1 + clip_high`` (Long-RL ships 0.3, "clip-higher")."""
    dual_clip: float | None = None
    """Dual-clip constant ``c > 1``: for negative advantages the loss is capped at ``-c * A``."""
    kl_coef: float = 0.01
    """Weight of the KL penalty to the reference model (0 disables the reference model)."""
    kl_estimator: KLEstimator = "k3"
    """Per-token KL estimator: ``k1`` log-ratio, ``k2`` half squared log-ratio, ``k3`` unbiased and positive."""
    aggregation: Aggregation = "token_mean"
    """``token_mean``: mean over all response tokens of the mini-batch; ``sequence_mean``: mean of
    each response's token mean (the original GRPO)."""
    rollout_is_cap: float | None = None
    """Truncated importance sampling: weight each token's policy-gradient term by
    ``min(pi_old / pi_rollout, cap)``, correcting for a rollout engine (vLLM) whose probabilities
    differ slightly from the trainer's. ``None``: no correction."""

    def __post_init__(self) -> None:
        if self.clip_low < 0 or self.clip_high < 0 or self.clip_low >= 1:
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}, {self.clip_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {self.dual_clip}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_estimator must be k1, k2 or k3, got {self.kl_estimator!r}")
        if self.aggregation not in ("token_mean", "sequence_mean"):
            raise ValueError(f"aggregation must be token_mean or sequence_mean, got {self.aggregation!r}")
        if self.rollout_is_cap is not None and self.rollout_is_cap <= 0:
            raise ValueError(f"rollout_is_cap must be > 0 or None, got {self.rollout_is_cap}")


def kl_divergence(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log-probs of tokens sampled from pi.

    With ``r = ref_logprobs - logprobs``: k1 = ``-r``, k2 = ``r**2 / 2``, k3 = ``exp(r) - r - 1``
    (Schulman's estimators; k3 is unbiased and never negative).
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        # clamp as other implementations do: exp of a large log-ratio overflows
        log_ratio = log_ratio.clamp(-20.0, 20.0)
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}")


class PolicyLoss(NamedTuple):
    loss: Tensor  # [N, T] per-token policy-gradient loss
    clipped: Tensor  # [N, T] bool, the clipped term was the active one


def clipped_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
) -> PolicyLoss:
    """Per-token ``-min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)``.

    Args:
        logprobs: ``[N, T]`` log-probs under the policy being trained.
        old_logprobs: ``[N, T]`` log-probs under the policy that sampled the responses.
        advantages: ``[N]`` (one per response) or ``[N, T]``.
        dual_clip: when set, losses of negative-advantage tokens are capped at ``-dual_clip * A``.
    """
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if dual_clip is not None:
        cap = -advantages * dual_clip
        capped = (advantages < 0) & (loss > cap)
        loss = torch.where(capped, cap.expand_as(loss), loss)
        is_clipped = is_clipped | capped
    return PolicyLoss(loss, is_clipped)


def aggregate(values: Tensor, mask: Tensor, mode: Aggregation = "token_mean", normalizer: float | None = None) -> Tensor:
    """Reduce per-token values ``[N, T]`` to a scalar over the tokens where ``mask`` is set.

    Args:
        mode: ``token_mean`` (every token weighs the same) or ``sequence_mean`` (every response
            weighs the same).
        normalizer: divide by this instead of the count in ``values`` (the number of tokens, or of
            responses, of the whole mini-batch when it is processed in micro-batches).
    """
    mask = mask.to(values.dtype)
    if mode == "token_mean":
        total = (values * mask).sum()
        return total / (normalizer if normalizer is not None else mask.sum().clamp(min=1.0))
    if mode == "sequence_mean":
        per_sequence = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_sequence.sum() / (normalizer if normalizer is not None else max(values.shape[0], 1))
    raise ValueError(f"unknown aggregation {mode!r}")


class LossTerms(NamedTuple):
    loss: Tensor  # scalar to backpropagate
    policy_loss: Tensor  # scalar, aggregated like the loss
    kl: Tensor  # scalar, aggregated like the loss (0 without a reference)
    clip_fraction: Tensor  # scalar, fraction of response tokens whose clipped term was active


def rollout_importance_weights(old_logprobs: Tensor, rollout_logprobs: Tensor, cap: float) -> Tensor:
    """``min(exp(old - rollout), cap)`` per token: how much more likely the trainer finds a token
    than the engine that sampled it, truncated (Yao et al., 2025)."""
    return torch.exp((old_logprobs - rollout_logprobs).clamp(max=20.0)).clamp(max=cap)


def grpo_loss(
    config: GRPOLossConfig,
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    ref_logprobs: Tensor | None = None,
    normalizer: float | None = None,
    rollout_logprobs: Tensor | None = None,
) -> LossTerms:
    """The GRPO loss of a (micro-)batch of responses (negated objective of equation 1).

    ``rollout_logprobs`` (the sampling engine's own log-probs) are used when
    ``config.rollout_is_cap`` is set: the policy-gradient term of each token is weighted by
    :func:`rollout_importance_weights`; the KL term is not.
    """
    policy = clipped_policy_loss(logprobs, old_logprobs, advantages, config.clip_low, config.clip_high, config.dual_clip)
    policy_tokens = policy.loss
    if config.rollout_is_cap is not None:
        if rollout_logprobs is None:
            raise ValueError("rollout_is_cap is set but the rollout engine's log-probs were not given")
        policy_tokens = policy_tokens * rollout_importance_weights(old_logprobs, rollout_logprobs, config.rollout_is_cap)
    per_token = policy_tokens
    kl = torch.zeros((), device=logprobs.device)
    if ref_logprobs is not None and config.kl_coef > 0:
        kl_tokens = kl_divergence(logprobs, ref_logprobs, config.kl_estimator)
        per_token = per_token + config.kl_coef * kl_tokens
        kl = aggregate(kl_tokens.detach(), mask, config.aggregation, normalizer)
    loss = aggregate(per_token, mask, config.aggregation, normalizer)
    policy_loss = aggregate(policy_tokens.detach(), mask, config.aggregation, normalizer)
    fraction = (policy.clipped & mask.bool()).sum() / mask.sum().clamp(min=1)
    return LossTerms(loss, policy_loss, kl, fraction.float())
