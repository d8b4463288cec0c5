"""Rollout groups: B questions with G scored responses each, and the packed sequences that the
old-policy, reference and policy passes score.

Rows are prompt-major: response ``j`` of question ``i`` is row ``i * G + j``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_longrl.models.video_lm import Generation, VideoEmbeddings
from lightning_longrl.rl.rollout import cat_generations


@dataclass
class RolloutGroups:
    """Everything the policy update needs about one or more groups (no records, no text)."""

    prompt_ids: list[Tensor]  # B x [Lp_i] prompt ids without padding
    media_keys: list[str]  # B cache keys
    videos: list[VideoEmbeddings]  # B embeddings (each question's visual items) used for rollouts (no autograd graph)
    pixel_values: list[Tensor | None]  # B x [P_i, D] patches, kept only when media must be re-encoded
    responses: Tensor  # [B*G, T] sampled ids, padded after end-of-turn
    response_mask: Tensor  # [B*G, T] True for generated tokens
    rollout_logprobs: Tensor  # [B*G, T] log-probs reported by the rollout engine
    rewards: Tensor  # [B, G] weighted total
    terms: dict[str, Tensor] = field(default_factory=dict)  # reward term -> [B, G]
    advantages: Tensor | None = None  # [B, G]

    @property
    def num_groups(self) -> int:
        return len(self.prompt_ids)

    @property
    def group_size(self) -> int:
        return self.rewards.shape[1]

    def question_of_row(self) -> Tensor:
        """``[B*G]`` question index of every response row."""
        return torch.arange(self.num_groups).repeat_interleave(self.group_size)

    def select(self, groups: list[int]) -> RolloutGroups:
        """The given groups (question indices), in that order."""
        g = self.group_size
        rows = torch.tensor([q * g + j for q in groups for j in range(g)], dtype=torch.long)
        rows = rows.to(self.responses.device)
        index = torch.tensor(groups, dtype=torch.long, device=self.rewards.device)
        return RolloutGroups(
            prompt_ids=[self.prompt_ids[q] for q in groups],
            media_keys=[self.media_keys[q] for q in groups],
            videos=[self.videos[q] for q in groups],
            pixel_values=[self.pixel_values[q] for q in groups],
            responses=self.responses[rows],
            response_mask=self.response_mask[rows],
            rollout_logprobs=self.rollout_logprobs[rows],
            rewards=self.rewards[index],
            terms={k: v[index] for k, v in self.terms.items()},
            advantages=None if self.advantages is None else self.advantages[index],
        )

    @staticmethod
    def cat(items: list[RolloutGroups], pad_id: int) -> RolloutGroups:
        """Groups of several rounds in one (responses right-padded to a common length)."""
        if len(items) == 1:
            return items[0]
        sampled = cat_generations([Generation(i.responses, i.rollout_logprobs, i.response_mask) for i in items], pad_id)
        return RolloutGroups(
            prompt_ids=[p for i in items for p in i.prompt_ids],
            media_keys=[k for i in items for k in i.media_keys],
            videos=[v for i in items for v in i.videos],
            pixel_values=[p for i in items for p in i.pixel_values],
            responses=sampled.tokens,
            response_mask=sampled.mask,
            rollout_logprobs=sampled.logprobs,
            rewards=torch.cat([i.rewards for i in items]),
            terms={k: torch.cat([i.terms[k] for i in items]) for k in items[0].terms},
            advantages=None if items[0].advantages is None else torch.cat([i.advantages for i in items]),
        )

    # -------------------------------------------------------------------- checkpoint (buffer)
    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, lists and dicts (loadable with ``torch.load(weights_only=True)``)."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["videos"] = [v.state_dict() for v in self.videos]
        return {k: _to(v, torch.device("cpu")) for k, v in state.items()}

    @staticmethod
    def from_state_dict(state: dict[str, Any], device: torch.device) -> RolloutGroups:
        state = dict(state)
        videos = [VideoEmbeddings.from_state_dict(v).to(device) for v in state["videos"]]
        if "second_per_grid_ts" in state:  # written before the embeddings kept their timing (one video each)
            seconds = state.pop("second_per_grid_ts")
            videos = [v._replace(seconds_per_patch=seconds[q : q + 1].to(device)) for q, v in enumerate(videos)]
        if "video_keys" in state:
            state["media_keys"] = state.pop("video_keys")
        return RolloutGroups(**{k: _to(v, device) for k, v in state.items() if k != "videos"}, videos=videos)


def _to(value, device: torch.device):
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


class PackedRows(NamedTuple):
    """Prompt + response sequences of some rows, right-padded, ready for a teacher-forced pass."""

    input_ids: Tensor  # [n, L]
    attention_mask: Tensor  # [n, L]
    target_mask: Tensor  # [n, L] True at response tokens
    questions: list[int]  # n question indices (which video each row uses)
    response_start: Tensor  # [n] position of each row's first response token


def pack_rows(groups: RolloutGroups, rows: list[int], pad_id: int) -> PackedRows:
    """Concatenate each row's prompt and its generated tokens."""
    g = groups.group_size
    device = groups.responses.device
    sequences, starts, questions, lengths = [], [], [], []
    for row in rows:
        q = row // g
        prompt = groups.prompt_ids[q].to(device)
        response = groups.responses[row][groups.response_mask[row]]
        sequences.append(torch.cat([prompt, response]))
        starts.append(len(prompt))
        lengths.append(len(response))
        questions.append(q)
    width = max(len(s) for s in sequences)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    target = torch.zeros((len(rows), width), dtype=torch.bool, device=device)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = seq
        attention[i, : len(seq)] = 1
        target[i, starts[i] : starts[i] + lengths[i]] = True
    return PackedRows(ids, attention, target, questions, torch.tensor(starts, device=device))


def left_pad(sequences: list[Tensor], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-padded ids ``[Q, L]`` and attention mask of several prompts."""
    width = max(len(s) for s in sequences)
    device = sequences[0].device
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq):] = seq
        mask[i, width - len(seq):] = 1
    return ids, mask


def to_response_layout(values: Tensor, packed: PackedRows, width: int) -> Tensor:
    """``[n, L]`` values at response positions -> ``[n, width]`` aligned with the response tokens."""
    offsets = torch.arange(width, device=values.device).unsqueeze(0) + packed.response_start.unsqueeze(1)
    gathered = values.gather(1, offsets.clamp(max=values.shape[1] - 1))
    valid = packed.target_mask.gather(1, offsets.clamp(max=values.shape[1] - 1)) & (offsets < values.shape[1])
    return torch.where(valid, gathered, torch.zeros_like(gathered))
