"""Operations on a :class:`VideoBatch` shared by the training stages, eval and the difficulty filter:
encoding its videos, embedding its prompts, scoring SFT targets, sampling and decoding responses."""

from __future__ import annotations

import torch
import torch.distributed as dist

from lightning_longrl.data.collate import IGNORE_INDEX, VideoBatch
from lightning_longrl.models.video_lm import LMInputs, VideoEmbeddings, VideoLanguageModel
from lightning_longrl.parallel.encode import sp_encode_video
from lightning_longrl.parallel.sequence import score_sequence
from lightning_longrl.rl.rollout import RolloutEngine, RolloutRequest, SamplingConfig, decode_responses


def encode_batch(model: VideoLanguageModel, batch: VideoBatch, sp_group: dist.ProcessGroup | None = None) -> VideoEmbeddings:
    """Vision embeddings of the batch's videos and images; no autograd graph when the vision tower
    is frozen. With a sequence-parallel group, each of its ranks encodes a share of every video's
    frames."""
    trainable = torch.is_grad_enabled() and any(p.requires_grad for p in model.vision_tower.parameters())
    with torch.set_grad_enabled(trainable):
        return sp_encode_video(model, batch.pixel_values, batch.grid_thw, sp_group, batch.second_per_grid_ts)


def embed_batch(model: VideoLanguageModel, batch: VideoBatch, video: VideoEmbeddings | None = None) -> LMInputs:
    """Language-model inputs of the batch (encoding its media unless ``video`` is given)."""
    video = encode_batch(model, batch) if video is None else video
    return model.embed(batch.input_ids, batch.attention_mask, video)


def sft_token_logprobs(model: VideoLanguageModel, batch: VideoBatch,
                       sp_group: dist.ProcessGroup | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs ``[B, L]`` of the target tokens of an SFT batch and the target mask ``[B, L]``.
    With a sequence-parallel group, the prefill is split along the sequence over its ranks (MM-SP)."""
    if batch.labels is None:
        raise ValueError("this batch has no labels; collate it in 'sft' mode")
    mask = batch.labels != IGNORE_INDEX
    inputs = embed_batch(model, batch, encode_batch(model, batch, sp_group))
    return score_sequence(model, inputs, batch.input_ids, mask, sp_group).logprobs, mask


@torch.no_grad()
def sample_responses(model: VideoLanguageModel, engine: RolloutEngine, batch: VideoBatch, sampling: SamplingConfig,
                     generator: torch.Generator | None = None) -> list[str]:
    """``sampling.num_samples`` responses per question of a prompt-mode batch from ``engine``, the
    batch's videos encoded once; prompt-major (question 0's responses first)."""
    videos = encode_batch(model, batch).split(model.spatial_merge_size, batch.visual_items)
    request = RolloutRequest(batch.input_ids, batch.attention_mask, videos, sampling.num_samples)
    return decode_responses(model, engine.generate(request, sampling, generator))
