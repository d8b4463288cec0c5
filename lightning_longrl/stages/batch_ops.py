"""Operations on a :class:`VideoBatch` that several stages share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from lightning_longrl.data.collate import IGNORE_INDEX, VideoBatch
from lightning_longrl.data.prompts import normalize_choice, parse_response
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.models.video_lm import Generation, LMInputs, VideoEmbeddings, VideoLanguageModel
from lightning_longrl.parallel.encode import sp_encode_video
from lightning_longrl.parallel.sequence import score_sequence
from lightning_longrl.rl.rewards import answers_match
from lightning_longrl.rl.rollout import RolloutEngine, RolloutRequest, SamplingConfig


def encode_batch(model: VideoLanguageModel, batch: VideoBatch, sp_group: dist.ProcessGroup | None = None) -> VideoEmbeddings:
    """Vision embeddings of the batch's videos; no autograd graph when the vision tower is frozen.
    With a sequence-parallel group, each of its ranks encodes a share of every video's frames."""
    trainable = torch.is_grad_enabled() and any(p.requires_grad for p in model.vision_tower.parameters())
    with torch.set_grad_enabled(trainable):
        return sp_encode_video(model, batch.pixel_values_videos, batch.video_grid_thw, sp_group)


def embed_batch(model: VideoLanguageModel, batch: VideoBatch, video: VideoEmbeddings | None = None) -> LMInputs:
    """Language-model inputs of the batch (encoding its videos unless ``video`` is given)."""
    video = encode_batch(model, batch) if video is None else video
    return model.embed(batch.input_ids, batch.attention_mask, video, batch.second_per_grid_ts)


def sft_token_logprobs(model: VideoLanguageModel, batch: VideoBatch,
                       sp_group: dist.ProcessGroup | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs ``[B, L]`` of the target tokens of an SFT batch and the target mask ``[B, L]``.
    With a sequence-parallel group, the prefill is split along the sequence over its ranks (MM-SP)."""
    if batch.labels is None:
        raise ValueError("this batch has no labels; collate it in 'sft' mode")
    mask = batch.labels != IGNORE_INDEX
    inputs = embed_batch(model, batch, encode_batch(model, batch, sp_group))
    return score_sequence(model, inputs, batch.input_ids, mask, sp_group).logprobs, mask


@dataclass
class Answered:
    """Greedy (or sampled) responses to a batch of questions, parsed and scored."""

    responses: list[str]
    generation: Generation
    well_formed: list[bool]
    predictions: list[str | None]
    correct: list[bool]


def score_answer(record: VideoQARecord, answer: str | None) -> tuple[str | None, bool]:
    """(normalised prediction, correct?) for a multiple-choice letter or a free-form answer."""
    if record.is_multiple_choice:
        prediction = normalize_choice(answer, record.options)
    else:
        prediction = answer.strip() if answer else None
    return prediction, answers_match(answer, record)


def decode_responses(model: VideoLanguageModel, generation: Generation) -> list[str]:
    """The text of each generated row (its generated tokens only, special tokens dropped)."""
    return [model.tokenizer.decode(tokens[mask].tolist(), skip_special_tokens=True)
            for tokens, mask in zip(generation.tokens, generation.mask)]


@torch.no_grad()
def sample_responses(model: VideoLanguageModel, engine: RolloutEngine, batch: VideoBatch, sampling: SamplingConfig,
                     generator: torch.Generator | None = None) -> list[str]:
    """``sampling.num_samples`` responses per question of a prompt-mode batch from ``engine``, the
    batch's videos encoded once; prompt-major (question 0's responses first)."""
    videos = encode_batch(model, batch).split(model.spatial_merge_size)
    request = RolloutRequest(batch.input_ids, batch.attention_mask, videos, batch.second_per_grid_ts,
                             sampling.num_samples)
    return decode_responses(model, engine.generate(request, sampling, generator))


@torch.no_grad()
def answer_batch(model: VideoLanguageModel, batch: VideoBatch, max_new_tokens: int, greedy: bool = True) -> Answered:
    """Generate a response per question of a prompt-mode batch and score it against the record."""
    generation = model.generate(embed_batch(model, batch), max_new_tokens=max_new_tokens, greedy=greedy)
    texts = decode_responses(model, generation)
    parsed = [parse_response(t) for t in texts]
    scored = [score_answer(r, p.answer) for r, p in zip(batch.records, parsed)]
    return Answered(texts, generation, [p.well_formed for p in parsed], [s[0] for s in scored], [s[1] for s in scored])
