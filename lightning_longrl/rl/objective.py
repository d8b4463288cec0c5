"""The policy objective (equation 1 of the paper and its successors): a clipped policy term plus
KL to a reference.

Three policy terms, chosen by ``GRPOLossConfig.objective``:

* ``grpo``: per-token ratio ``pi / pi_old``, clipped to ``[1 - clip_low, 1 + clip_high]``
  (PPO's pessimistic minimum), optionally dual-clipped.
* ``gspo``: one ratio per response, the geometric mean of its token ratios
  ``exp(mean_t log(pi / pi_old))``, clipped per response (GSPO, Zheng et al. 2025; its clip range
  is far narrower, e.g. 3e-4 / 4e-4). Written in GSPO's token form: every token carries the
  response's ratio as its value and its own log-prob's gradient, so with ``sequence_mean``
  aggregation (required) the gradient is exactly GSPO's.
* ``cispo``: REINFORCE on every token weighted by its ratio clipped and detached,
  ``-sg(clip(ratio)) * A * log pi`` (CISPO, MiniMax-M1 2025): clipping bounds the weight but never
  drops a token's gradient.

Aggregation over tokens: ``token_mean`` (DAPO), ``sequence_mean`` (the original GRPO) or
``sequence_sum`` (Dr. GRPO: each response's token sum divided by one fixed length, so long and
short responses are not reweighted by their own length).

All functions work on per-token tensors ``[N, T]`` of N responses of up to T tokens with a
``mask`` marking real response tokens, so they can be checked against hand-computed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]
Aggregation = Literal["token_mean", "sequence_mean", "sequence_sum"]
PolicyObjective = Literal["grpo", "gspo", "cispo"]
AGGREGATIONS = ("token_mean", "sequence_mean", "sequence_sum")
OBJECTIVES = ("grpo", "gspo", "cispo")
MAX_LOG_RATIO = 20.0
"""Log-ratios are clamped here before ``exp`` (a stale or diverged token would overflow)."""


@dataclass
class GRPOLossConfig:
    """Policy objective, clipping, KL and aggregation of the RL loss."""

    objective: PolicyObjective = "grpo"
    """``grpo`` (per-token ratio), ``gspo`` (per-response ratio) or ``cispo`` (clipped, detached
    importance weights on REINFORCE); see the module docstring."""
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
    each response's token mean (the original GRPO; required by ``gspo``); ``sequence_sum``: mean of
    each response's token sum divided by ``length_normalizer`` (Dr. GRPO)."""
    length_normalizer: int | None = None
    """The fixed length ``sequence_sum`` divides every response's token sum by; ``None``: the
    rollouts' ``max_new_tokens`` (the stage fills it in), as Dr. GRPO does."""
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
        if self.objective not in OBJECTIVES:
            raise ValueError(f"loss objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"loss aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.objective == "gspo" and self.aggregation != "sequence_mean":
            raise ValueError("loss objective gspo clips one ratio per response and needs aggregation: sequence_mean, "
                             f"got {self.aggregation!r}")
        if self.dual_clip is not None and self.objective != "grpo":
            raise ValueError(f"dual_clip applies to the grpo objective only, not {self.objective!r}")
        if self.length_normalizer is not None and self.length_normalizer < 1:
            raise ValueError(f"length_normalizer must be >= 1 or None, got {self.length_normalizer}")
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
        log_ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
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


def gspo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
) -> PolicyLoss:
    """GSPO's per-response clipped ratio in its token form (aggregate with ``sequence_mean``).

    The response's ratio ``s = exp(mean_t (log pi - log pi_old))`` over its ``mask`` tokens is
    clipped to ``[1 - clip_low, 1 + clip_high]`` as in PPO; every token carries the value
    ``-min(s * A, clip(s) * A)`` and the gradient ``s * A * grad log pi_t`` (zero where clipped),
    so the response's token mean has exactly the gradient of GSPO's sequence objective.

    Args:
        advantages: ``[N]``, one per response.
    """
    if advantages.ndim != 1:
        raise ValueError(f"gspo needs one advantage per response ([N]), got shape {tuple(advantages.shape)}")
    weights = mask.to(logprobs.dtype)
    mean_log_ratio = ((logprobs - old_logprobs) * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)  # [N]
    # value: the response's log-ratio; gradient: each token's own log-prob (GSPO-token, Zheng et al. eq. 10)
    log_ratio = logprobs - logprobs.detach() + mean_log_ratio.detach().clamp(max=MAX_LOG_RATIO).unsqueeze(-1)
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(-1)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return PolicyLoss(torch.maximum(unclipped, clipped), clipped > unclipped)


def cispo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    clip_low: float,
    clip_high: float,
) -> PolicyLoss:
    """Per-token ``-sg(clip(ratio, 1 - clip_low, 1 + clip_high)) * A * log pi`` (CISPO).

    The importance weight is clipped and detached, so every token keeps the REINFORCE gradient
    ``-clip(ratio) * A * grad log pi``; ``clipped`` marks the tokens whose weight was clipped.
    """
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp((logprobs - old_logprobs).detach().clamp(max=MAX_LOG_RATIO))
    weight = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return PolicyLoss(-weight * advantages * logprobs, weight != ratio)


def aggregate(values: Tensor, mask: Tensor, mode: Aggregation = "token_mean", normalizer: float | None = None,
              length_normalizer: float | None = None) -> Tensor:
    """Reduce per-token values ``[N, T]`` to a scalar over the tokens where ``mask`` is set.

    Args:
        mode: ``token_mean`` (every token weighs the same), ``sequence_mean`` (every response
            weighs the same) or ``sequence_sum`` (each response's token sum over
            ``length_normalizer``, averaged over responses: Dr. GRPO).
        normalizer: divide by this instead of the count in ``values`` (the number of tokens, or of
            responses, of the whole mini-batch when it is processed in micro-batches).
        length_normalizer: the fixed length of ``sequence_sum`` (required there).
    """
    mask = mask.to(values.dtype)
    if mode == "token_mean":
        total = (values * mask).sum()
        return total / (normalizer if normalizer is not None else mask.sum().clamp(min=1.0))
    if mode == "sequence_mean":
        per_sequence = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_sequence.sum() / (normalizer if normalizer is not None else max(values.shape[0], 1))
    if mode == "sequence_sum":
        if length_normalizer is None:
            raise ValueError("sequence_sum aggregation needs a length_normalizer (e.g. max_new_tokens)")
        per_sequence = (values * mask).sum(-1) / length_normalizer
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
    """The loss of a (micro-)batch of responses (negated objective of equation 1, with the policy
    term of ``config.objective``).

    ``rollout_logprobs`` (the sampling engine's own log-probs) are used when
    ``config.rollout_is_cap`` is set: the policy-gradient term of each token is weighted by
    :func:`rollout_importance_weights`; the KL term is not.
    """
    if config.objective == "gspo":
        policy = gspo_policy_loss(logprobs, old_logprobs, advantages, mask, config.clip_low, config.clip_high)
    elif config.objective == "cispo":
        policy = cispo_policy_loss(logprobs, old_logprobs, advantages, config.clip_low, config.clip_high)
    else:
        policy = clipped_policy_loss(logprobs, old_logprobs, advantages, config.clip_low, config.clip_high,
                                     config.dual_clip)
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
        kl = aggregate(kl_tokens.detach(), mask, config.aggregation, normalizer, config.length_normalizer)
    loss = aggregate(per_token, mask, config.aggregation, normalizer, config.length_normalizer)
    policy_loss = aggregate(policy_tokens.detach(), mask, config.aggregation, normalizer, config.length_normalizer)
    fraction = (policy.clipped & mask.bool()).sum() / mask.sum().clamp(min=1)
    return LossTerms(loss, policy_loss, kl, fraction.float())
