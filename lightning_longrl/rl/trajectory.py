"""One GRPO trajectory: B questions, each one's video or images encoded once (or taken from the embedding cache),
G responses per question sampled from those embeddings, rewarded (text rewards, then length
shaping), and turned into advantages by the configured estimator (group-normalised by default)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_longrl.data.collate import VideoBatch
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.models.video_lm import Generation, VideoEmbeddings, VideoLanguageModel
from lightning_longrl.parallel.encode import sp_encode_video
from lightning_longrl.rl.advantages import AdvantageConfig
from lightning_longrl.rl.embedding_cache import VideoEmbeddingCache
from lightning_longrl.rl.groups import RolloutGroups
from lightning_longrl.rl.monitoring import PhaseTimer
from lightning_longrl.rl.rewards import CombinedReward, OverlongPenalty
from lightning_longrl.rl.rollout import RolloutEngine, RolloutRequest, SamplingConfig, cat_generations, decode_responses
from lightning_longrl.rl.temporal import TemporalContrastConfig, shuffle_frames, temporal_bonus

Encoder = Callable[[list[int]], list[VideoEmbeddings]]
"""Encodes the videos at the given positions in one vision-tower call."""


@dataclass
class RolloutView:
    """The latest step's questions and responses, for sample logging (see ``RolloutSampleLogger``)."""

    records: list[VideoQARecord]
    texts: list[str]  # B*G responses, prompt-major
    rewards: Tensor  # [B, G]
    pixel_values: list[Tensor]  # B x [P_i, D] the patches the model saw
    grid_thw: list[Tensor]  # B x [k_i, 3] each question's visual items (none for text-only)


def video_encoder(model: VideoLanguageModel, pixels: list[Tensor], grids: list[Tensor], seconds: list[Tensor],
                  timer: PhaseTimer, sp_group: dist.ProcessGroup | None = None, grad: bool = False) -> Encoder:
    """An :data:`Encoder` over questions whose visual items are given as patches ``pixels``
    (``[P_i, D]`` each), grids (``[k_i, 3]`` each) and seconds per temporal patch (``[k_i]`` each);
    under MR-SP each rank of ``sp_group`` encodes a share of every video's frames."""

    def encode(positions: list[int]) -> list[VideoEmbeddings]:
        with timer("encode"), torch.set_grad_enabled(grad):
            out = sp_encode_video(model, torch.cat([pixels[p] for p in positions]), torch.cat([grids[p] for p in positions]),
                                  sp_group, torch.cat([seconds[p] for p in positions]))
        return out.split(model.spatial_merge_size, [len(grids[p]) for p in positions])

    return encode


def sample_groups(model: VideoLanguageModel, engine: RolloutEngine, cache: VideoEmbeddingCache, batch: VideoBatch,
                  sampling: SamplingConfig, reward: CombinedReward, generator: torch.Generator, timer: PhaseTimer,
                  device: torch.device, sp_group: dist.ProcessGroup | None, keep_pixels: bool,
                  advantage: AdvantageConfig,
                  overlong: OverlongPenalty | None = None,
                  temporal: TemporalContrastConfig | None = None) -> tuple[RolloutGroups, RolloutView]:
    """Encode the batch's videos once, sample ``sampling.num_samples`` responses per question from
    ``engine``, reward them (``overlong`` adds its length penalty; ``temporal`` also samples G on
    the shuffled videos and adds the temporal bonus) and compute their advantages.

    With the cache off every rollout encodes its video again (as RL frameworks without the cache
    do), so the saving can be measured. ``keep_pixels``: the groups keep the patches, for passes
    that must re-encode (a trainable or different vision tower, or no cache).
    """
    g = sampling.num_samples
    pixels, grids = batch.item_pixels(), batch.item_grids()
    encode = video_encoder(model, pixels, grids, batch.item_seconds(), timer, sp_group)

    def request(videos: list[VideoEmbeddings], samples: int) -> RolloutRequest:
        return RolloutRequest(batch.input_ids, batch.attention_mask, videos, samples)

    if cache.config.enabled:
        videos = cache.get("policy", batch.media_keys, encode, device)
        with timer("rollout"):
            generation = engine.generate(request(videos, g), sampling, generator)
    else:
        parts = []  # rows come back sample-major; reordered below
        for _ in range(g):
            videos = cache.get("policy", batch.media_keys, encode, device)
            with timer("rollout"):
                parts.append(engine.generate(request(videos, 1), sampling, generator))
        generation = _interleave(parts, model.pad_token_id)
    shuffled = None
    if temporal is not None and temporal.enabled:  # the same embeddings, temporal patches shuffled: no encoding
        with timer("rollout"):
            shuffled = engine.generate(request(shuffle_frames(videos, generator), g), sampling, generator)
    engine.release()  # free the engine's memory for the update phase (GPU)
    with timer("reward"):
        texts = decode_responses(model, generation)
        answered = [r for r in batch.records for _ in range(g)]  # the record of each response
        scores = reward(texts, answered)
        shape = (len(batch), g)
        rewards = torch.tensor(scores.total, dtype=torch.float32).view(shape)  # [B, G]
        terms = {k: torch.tensor(v, dtype=torch.float32).view(shape) for k, v in scores.terms.items()}
        if shuffled is not None:
            shuffled_accuracy = reward.term("accuracy", decode_responses(model, shuffled), answered)
            terms["shuffled_accuracy"] = torch.tensor(shuffled_accuracy, dtype=torch.float32).view(shape)
            terms["temporal"] = temporal_bonus(terms["accuracy"], terms["shuffled_accuracy"], temporal.bonus, temporal.margin)
            rewards = rewards + terms["temporal"]
        if overlong is not None and overlong.enabled:
            terms["overlong"] = overlong(generation.mask.sum(-1).view(shape).cpu(), sampling.max_new_tokens)  # [B, G]
            rewards = rewards + terms["overlong"]
        advantages = advantage(rewards)  # [B, G]
    groups = RolloutGroups(
        prompt_ids=[ids[mask.bool()] for ids, mask in zip(batch.input_ids, batch.attention_mask)],
        media_keys=list(batch.media_keys), videos=videos,
        pixel_values=[p if keep_pixels else None for p in pixels], responses=generation.tokens,
        response_mask=generation.mask, rollout_logprobs=generation.logprobs,
        rewards=rewards.to(device), terms={k: v.to(device) for k, v in terms.items()},
        advantages=advantages.to(device),
    )
    return groups, RolloutView(list(batch.records), texts, rewards, pixels, grids)


def _interleave(parts: list[Generation], pad_id: int) -> Generation:
    """G generations of one sample per prompt -> one generation with prompt-major rows."""
    stacked = cat_generations(parts, pad_id)  # rows: sample-major
    g, b = len(parts), parts[0].tokens.shape[0]
    order = torch.arange(g * b).view(g, b).t().flatten()
    return Generation(stacked.tokens[order], stacked.logprobs[order], stacked.mask[order])
