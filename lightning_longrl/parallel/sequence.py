"""Sequence-parallel prefill: pad, shard along the sequence, score each rank's slice, gather.

Every rank of a sequence-parallel group holds the same batch. The input embeddings and the
M-RoPE position ids are built for the whole sequence (so positions are global), padded to a
multiple of the group size and cut into contiguous slices; rank r runs the decoder on slice r,
with Ulysses attention exchanging heads for positions inside every attention layer. Each rank
then scores the targets its slice predicts, and an all-gather puts the per-token log-probs
back together for the loss (differentiably).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from lightning_longrl.models.video_lm import LMInputs, TokenScores, VideoLanguageModel
from lightning_longrl.parallel.collectives import all_gather
from lightning_longrl.parallel.ulysses import sequence_parallel_attention


@dataclass(frozen=True)
class SequenceShard:
    """Where this rank's slice sits in the padded sequence."""

    length: int  # L, the real sequence length
    padded: int  # L rounded up to a multiple of the group size
    start: int  # first position of this rank's slice
    end: int  # one past its last position

    @classmethod
    def of(cls, length: int, group: dist.ProcessGroup) -> SequenceShard:
        size, rank = dist.get_world_size(group), dist.get_rank(group)
        padded = -(-length // size) * size
        piece = padded // size
        return cls(length, padded, rank * piece, (rank + 1) * piece)


def pad_inputs(inputs: LMInputs, length: int) -> LMInputs:
    """Right-pad a batch to ``length`` positions (masked out; never attended to by real tokens)."""
    extra = length - inputs.inputs_embeds.shape[1]
    if extra == 0:
        return inputs
    visual = F.pad(inputs.visual_pos_masks, (0, extra), value=False) if inputs.visual_pos_masks is not None else None
    return LMInputs(
        F.pad(inputs.inputs_embeds, (0, 0, 0, extra)),
        F.pad(inputs.attention_mask, (0, extra)),
        F.pad(inputs.position_ids, (0, extra), mode="replicate"),
        visual,
        inputs.deepstack,
    )


def sp_hidden_states(model: VideoLanguageModel, inputs: LMInputs, group: dist.ProcessGroup) -> tuple[Tensor, SequenceShard]:
    """This rank's slice ``[B, l, H]`` of the final hidden states of the whole sequence."""
    shard = SequenceShard.of(inputs.inputs_embeds.shape[1], group)
    padded = pad_inputs(inputs, shard.padded)
    s, e = shard.start, shard.end
    # no per-slice mask: the attention masks the whole sequence itself (models that build their
    # masks unconditionally get none from the "ulysses" mask function)
    layer_types = getattr(model.language_model.config, "layer_types", None)
    layer_masks = {t: None for t in set(layer_types)} if layer_types else None
    extra = {}
    if padded.deepstack:  # Qwen3-VL: the slice's visual positions and their rows of each deepstack level
        visual = padded.visual_pos_masks
        positions = visual.nonzero()[:, 1]  # row-major, the order of the deepstack rows
        rows = (positions >= s) & (positions < e)
        extra = {"visual_pos_masks": visual[:, s:e], "deepstack_visual_embeds": [d[rows] for d in padded.deepstack]}
    with sequence_parallel_attention(model.language_model, group, padded.attention_mask):
        out = model.language_model(
            inputs_embeds=padded.inputs_embeds[:, s:e], attention_mask=layer_masks,
            position_ids=padded.position_ids[..., s:e], use_cache=False, **extra,
        )
    return out.last_hidden_state, shard


def sp_score_targets(
    model: VideoLanguageModel,
    hidden: Tensor,
    shard: SequenceShard,
    input_ids: Tensor,
    target_mask: Tensor,
    group: dist.ProcessGroup,
    temperature: float = 1.0,
    entropy: bool = False,
    exclude_vision_tokens: bool = False,
) -> TokenScores:
    """:meth:`VideoLanguageModel.score_targets` of the whole sequence from each rank's slice.

    The hidden state at position p predicts the token at p + 1, so rank r scores the targets at
    ``start + 1 .. end``; the per-position results are all-gathered (with gradients).

    Args:
        hidden: ``[B, l, H]`` this rank's slice (from :func:`sp_hidden_states`).
        input_ids, target_mask: ``[B, L]`` of the whole, unpadded sequence.

    Returns:
        float32 ``[B, L]`` log-probs (and entropies), 0 outside targets, identical on every rank.
    """
    length = shard.length
    ids = F.pad(input_ids, (0, shard.padded + 1 - length), value=0)
    targets = F.pad(target_mask.bool(), (0, shard.padded + 1 - length), value=False).clone()
    targets[:, 0] = False
    nxt = torch.arange(shard.start + 1, shard.end + 1, device=hidden.device)
    local_targets = targets[:, nxt]  # [B, l] the slice's position j predicts a target at start + j + 1
    logprobs, ent_values = model.score_predictors(hidden[local_targets], ids[:, nxt][local_targets], temperature,
                                                  entropy, exclude_vision_tokens)
    local = torch.zeros(local_targets.shape, dtype=torch.float32, device=hidden.device)
    out = _shift_back(all_gather(local.masked_scatter(local_targets, logprobs), dim=1, group=group), length)
    ent = None
    if entropy:
        local_ent = torch.zeros_like(local).masked_scatter(local_targets, ent_values)
        ent = _shift_back(all_gather(local_ent, dim=1, group=group), length)
    return TokenScores(out, ent)


def score_sequence(
    model: VideoLanguageModel,
    inputs: LMInputs,
    input_ids: Tensor,
    target_mask: Tensor,
    group: dist.ProcessGroup | None,
    temperature: float = 1.0,
    entropy: bool = False,
    exclude_vision_tokens: bool = False,
) -> TokenScores:
    """Prefill ``inputs`` and score the targets: sequence-parallel over ``group``, or in this
    process alone when ``group`` is ``None`` (the same result either way)."""
    if group is None:
        return model.score_targets(model.hidden_states(inputs), input_ids, target_mask, temperature, entropy,
                                   exclude_vision_tokens)
    hidden, shard = sp_hidden_states(model, inputs, group)
    return sp_score_targets(model, hidden, shard, input_ids, target_mask, group, temperature, entropy,
                            exclude_vision_tokens)


def _shift_back(per_predictor: Tensor, length: int) -> Tensor:
    """Column p holds the score of the token at p + 1; move it to column p + 1 and trim."""
    out = torch.zeros_like(per_predictor[:, :length])
    out[:, 1:] = per_predictor[:, : length - 1]
    return out
