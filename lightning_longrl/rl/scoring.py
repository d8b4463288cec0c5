"""Teacher-forced log-probs of sampled responses: the old-policy, reference and update passes.

Every pass takes each video's embeddings from the rollout (the cache) unless it must encode
again: with gradients through a trainable vision tower, for every pass when the cache is off, or
with a reference whose vision tower differs from the policy's. A pass then runs one of three ways,
chosen here and nowhere else:

* **shared prefill** (one process): each question's video and prompt are prefilled once and the
  KV cache is shared by its G responses;
* **full sequences**: one prompt + response sequence per row (also under gradient checkpointing);
* **sequence parallel** (MR-SP, a group of ranks): full sequences whose prefill is split along
  the sequence over the group.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_longrl.models.video_lm import VideoEmbeddings, VideoLanguageModel
from lightning_longrl.parallel.sequence import score_sequence
from lightning_longrl.rl.embedding_cache import VideoEmbeddingCache
from lightning_longrl.rl.groups import RolloutGroups, left_pad, pack_rows, to_response_layout
from lightning_longrl.rl.monitoring import PhaseTimer
from lightning_longrl.rl.rollout import SamplingConfig
from lightning_longrl.rl.trajectory import video_encoder
from lightning_longrl.rl.update import UpdateConfig, chunks


@dataclass
class PassLogprobs:
    """The no-grad passes before an update, response-aligned with the groups' rows."""

    old: Tensor | None  # [B*G, T] the sampling policy's log-probs; None: the update computes them (ratio 1)
    ref: Tensor | None  # [B*G, T] the reference model's; None without a KL term


class ResponseScorer:
    """Log-probs (and entropies) of rollout responses under a model.

    Args:
        cache: the video-embedding cache (its ``config.enabled`` is read at every pass).
        update: the update settings (``shared_prefill`` is read at every pass).
        sampling: the rollout settings (log-probs are those of the distribution tempered by its
            ``temperature``, read at every pass).
        pad_token_id: the tokenizer's padding id.
        sp_group: returns this rank's sequence-parallel group (``None`` outside MR-SP).
        ref_shares_vision: returns whether the reference's vision tower equals the policy's, so
            that its pass can reuse the rollout's embeddings.
    """

    def __init__(self, cache: VideoEmbeddingCache, update: UpdateConfig, sampling: SamplingConfig, pad_token_id: int,
                 sp_group: Callable[[], dist.ProcessGroup | None], ref_shares_vision: Callable[[], bool]) -> None:
        self.cache = cache
        self.update = update
        self.sampling = sampling
        self.pad_token_id = pad_token_id
        self.sp_group = sp_group
        self.ref_shares_vision = ref_shares_vision

    def score(self, model: VideoLanguageModel, groups: RolloutGroups, rows: list[int], namespace: str, timer: PhaseTimer,
              grad: bool = False, entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        """Log-probs and entropies (``None`` unless asked) ``[n, T]`` of the responses in ``rows``.

        Args:
            model: the policy or the reference.
            groups: the step's rollout groups.
            rows: response rows to score (prompt-major indices).
            namespace: ``policy`` or ``ref`` (cache entries of the reference are its own).
            timer: phase timer (encoding time is booked under ``encode``).
            grad: keep the graph (the update pass); the vision tower is re-encoded with gradients
                when it is trainable.
            entropy: also return per-token entropies.
        """
        device = groups.rewards.device
        sp_group = self.sp_group()
        # a shared prefill cannot be backpropagated through checkpointed layers (they drop its KV cache)
        backprop_checkpointed = torch.is_grad_enabled() and model.training and model.hf.is_gradient_checkpointing
        if sp_group is None and self.update.shared_prefill and not backprop_checkpointed:
            g = groups.group_size
            questions = sorted({r // g for r in rows})
            video = self._videos(model, groups, questions, namespace, timer, grad)
            ids, mask = left_pad([groups.prompt_ids[q].to(device) for q in questions], self.pad_token_id)
            prompts = model.embed(ids, mask, video)
            prompt_of_row = torch.tensor([questions.index(r // g) for r in rows], device=device)
            scores = model.score_responses(prompts, prompt_of_row, groups.responses[rows], groups.response_mask[rows],
                                           self.sampling.temperature, entropy, exclude_vision_tokens=True)
            return scores.logprobs, scores.entropy
        packed = pack_rows(groups, rows, self.pad_token_id)
        video = self._videos(model, groups, packed.questions, namespace, timer, grad)
        inputs = model.embed(packed.input_ids, packed.attention_mask, video)
        scores = score_sequence(model, inputs, packed.input_ids, packed.target_mask, sp_group, self.sampling.temperature, entropy,
                                exclude_vision_tokens=True)
        width = groups.responses.shape[1]
        logprobs = to_response_layout(scores.logprobs, packed, width)
        return logprobs, to_response_layout(scores.entropy, packed, width) if entropy else None

    @torch.no_grad()
    def before_update(self, policy: VideoLanguageModel, ref: VideoLanguageModel | None, groups: RolloutGroups,
                      timer: PhaseTimer,
                      reference_context: Callable[[], AbstractContextManager] = nullcontext) -> PassLogprobs:
        """The old-policy pass (only when the policy can move before some response is scored, see
        :meth:`UpdateConfig.needs_old_policy_pass`) and the reference pass, in micro-batches;
        ``reference_context`` is entered around each reference pass (LoRA: the policy with its
        adapters disabled is the reference)."""
        rows_total = groups.num_groups * groups.group_size
        micro = self.update.sizes(rows_total)[1]
        old = torch.zeros_like(groups.rollout_logprobs) if self.update.needs_old_policy_pass(rows_total) else None
        ref_logprobs = torch.zeros_like(groups.rollout_logprobs) if ref is not None else None
        for rows in chunks(list(range(rows_total)), micro):
            if old is not None:
                with timer("old_policy"):
                    old[rows] = self.score(policy, groups, rows, "policy", timer)[0]
            if ref_logprobs is not None:
                with timer("reference"), reference_context():
                    ref_logprobs[rows] = self.score(ref, groups, rows, "ref", timer)[0]
        return PassLogprobs(old, ref_logprobs)

    def _videos(self, model: VideoLanguageModel, groups: RolloutGroups, questions: list[int], namespace: str,
                timer: PhaseTimer, grad: bool) -> VideoEmbeddings:
        """Video embeddings, one per row, for a pass over rows of ``questions``."""
        unique = sorted(set(questions))
        if grad or not self.cache.config.enabled or (namespace == "ref" and not self.ref_shares_vision()):
            kept = [groups.videos[q] for q in unique]
            encode = video_encoder(model, [groups.pixel_values[q] for q in unique], [v.grid_thw for v in kept],
                                   [v.seconds_per_patch for v in kept], timer, self.sp_group(), grad)
            if grad:
                fresh = self.cache.encode_uncached(encode, list(range(len(unique))))
            else:
                fresh = self.cache.get(namespace, [groups.media_keys[q] for q in unique], encode, groups.rewards.device)
            by_question = dict(zip(unique, fresh))
        else:
            by_question = {q: groups.videos[q] for q in unique}
        return VideoEmbeddings.cat([by_question[q] for q in questions])

