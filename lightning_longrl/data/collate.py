"""Turn decoded samples into model batches with the model's own processor and chat template.

The processor expands each ``<|video_pad|>`` / ``<|image_pad|>`` placeholder to the exact number of
vision tokens (and, for Qwen3-VL, writes each temporal patch's timestamp into the text); M-RoPE
timing is taken from the frames' real timestamps, not from a nominal frame rate.

A batch may mix video, image and text-only questions. Their *visual items* (a video, or an image,
which the vision tower sees as a video of one temporal patch) are listed in prompt order: row 0's
items first, then row 1's, and so on; a text-only row has none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lightning_longrl.data import prompts
from lightning_longrl.data.dataset import SkippedSample, VideoSample
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.data.video import timing_problem

IGNORE_INDEX = -100


@dataclass
class VideoBatch:
    """A batch of B questions with their media, ready for :class:`VideoLanguageModel`; V visual
    items (videos and images) in prompt order."""

    input_ids: Tensor  # [B, L]
    attention_mask: Tensor  # [B, L]
    mm_token_type_ids: Tensor  # [B, L] 0 text, 1 image, 2 video
    pixel_values: Tensor  # [P, C*T*p*p] flattened patches of all visual items
    grid_thw: Tensor  # [V, 3] patch grid of each visual item (an image has t = 1)
    second_per_grid_ts: Tensor  # [V] seconds spanned by one temporal patch (from real timestamps; 0 for images)
    labels: Tensor | None  # [B, L] target ids with IGNORE_INDEX outside the response (SFT), else None
    records: list[VideoQARecord]
    timestamps: list[Tensor]  # B x [F] seconds of the sampled frames ([0] without a video)
    visual_items: list[int] = field(default_factory=list)  # B: visual items of each question (0 for text-only)
    media_keys: list[str] = field(default_factory=list)  # B keys naming each question's pixels (cache key)
    decode_seconds: float = 0.0  # summed wall time the workers spent reading these media
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason) dropped from this batch
    skipped_total: int = 0  # running count of skipped samples, set by the data module

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_frames(self) -> list[int]:
        return [len(t) for t in self.timestamps]

    def item_grids(self) -> list[Tensor]:
        """B grids ``[k_i, 3]``: the visual items of each question."""
        return list(self.grid_thw.split(self.visual_items))

    def item_pixels(self) -> list[Tensor]:
        """B patch tensors ``[P_i, D]``: the patches of each question's visual items."""
        return list(self.pixel_values.split([int(g.prod(-1).sum()) for g in self.item_grids()]))

    def item_seconds(self) -> list[Tensor]:
        """B tensors ``[k_i]``: seconds per temporal patch of each question's visual items."""
        return list(self.second_per_grid_ts.split(self.visual_items))

    def first(self, n: int) -> VideoBatch:
        """The batch's first ``n`` questions (their patches included); ``self`` if it has no more."""
        if n >= len(self):
            return self
        items = sum(self.visual_items[:n])
        patches = int(self.grid_thw[:items].prod(-1).sum())
        labels = self.labels[:n] if self.labels is not None else None
        return replace(self, input_ids=self.input_ids[:n], attention_mask=self.attention_mask[:n],
                       mm_token_type_ids=self.mm_token_type_ids[:n], pixel_values=self.pixel_values[:patches],
                       grid_thw=self.grid_thw[:items], second_per_grid_ts=self.second_per_grid_ts[:items],
                       labels=labels, records=self.records[:n], timestamps=self.timestamps[:n],
                       visual_items=self.visual_items[:n], media_keys=self.media_keys[:n])

    def to(self, device: torch.device | str) -> VideoBatch:
        """Move every tensor (Lightning calls this through ``transfer_batch_to_device``)."""
        moved = {
            name: getattr(self, name).to(device)
            for name in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "grid_thw",
                         "second_per_grid_ts")
        }
        labels = self.labels.to(device) if self.labels is not None else None
        return replace(self, labels=labels, **moved)


def timing_metadata(timestamps: np.ndarray, height: int, width: int):
    """A ``transformers`` ``VideoMetadata`` whose derived timing equals the real timestamps.

    Hugging Face processors derive time from ``frames_indices / fps`` (Qwen3-VL timestamps) and
    ``len(frames_indices) / total_num_frames * fps`` (Qwen2.5-VL seconds per temporal patch). A
    1 kHz timeline with one index per sampled frame makes both exact to the millisecond, also for
    clips cut from the middle of a file, where the source frame rate would give wrong values.
    """
    from transformers.video_utils import VideoMetadata

    ms = np.round(np.asarray(timestamps, dtype=np.float64) * 1000.0).astype(np.int64)
    interval = frame_interval(timestamps)
    return VideoMetadata(
        total_num_frames=max(1, int(round(len(ms) * interval * 1000.0))), fps=1000.0, width=width, height=height,
        duration=float(len(ms) * interval), frames_indices=ms.tolist(),
    )


def media_key(record: VideoQARecord, timestamps: np.ndarray | None, grid_thw: Tensor) -> str:
    """Names exactly which pixels a question contributes: its video's file, clip bounds, the
    sampled frames' timestamps (ms) and the patch grid they were resized to; or its image files
    and their grids; ``"text:"`` when it has none. Questions on the same video (or images) with the
    same sampling share a key, and so share cached embeddings."""
    digest = hashlib.sha1()
    if timestamps is not None:
        digest.update(np.round(np.asarray(timestamps, dtype=np.float64) * 1000.0).astype(np.int64).tobytes())
    digest.update(np.asarray(grid_thw.tolist(), dtype=np.int64).tobytes())
    if record.video is not None:
        return f"{record.video}[{record.start}:{record.end}]#{digest.hexdigest()[:20]}"
    if record.images:
        return f"images:{'|'.join(record.images)}#{digest.hexdigest()[:20]}"
    return "text:"


def frame_interval(timestamps: np.ndarray) -> float:
    """Mean spacing of sampled frames in seconds (1.0 for a single frame)."""
    if len(timestamps) < 2:
        return 1.0
    return max(float(timestamps[-1] - timestamps[0]) / (len(timestamps) - 1), 1e-3)


class VideoQACollator:
    """Collate :class:`VideoSample` items into a :class:`VideoBatch`.

    Args:
        processor: the model's Hugging Face processor (tokenizer, video processor, chat template).
        mode: ``"sft"`` appends the reasoning+answer target and right-pads; ``"prompt"`` builds
            left-padded prompts for generation.
        think: ask for ``<think>`` reasoning (else a direct answer).
        include_subtitles: put record subtitles into the prompt as text.
        max_length: samples longer than this many tokens are dropped and reported as skipped.
    """

    def __init__(
        self,
        processor,
        mode: Literal["sft", "prompt"] = "sft",
        think: bool = True,
        include_subtitles: bool = True,
        max_length: int | None = None,
    ) -> None:
        if mode not in ("sft", "prompt"):
            raise ValueError(f"mode must be 'sft' or 'prompt', got {mode!r}")
        self.processor = processor
        self.mode = mode
        self.think = think
        self.include_subtitles = include_subtitles
        self.max_length = max_length
        vp = processor.video_processor
        self.temporal_patch_size = vp.temporal_patch_size
        self.patch_dim = 3 * vp.temporal_patch_size * vp.patch_size**2  # width of one patch row
        tokenizer = processor.tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError("the model's tokenizer has no pad token; set one (Qwen uses <|endoftext|>)")
        if tokenizer.convert_tokens_to_ids(prompts.END_OF_TURN) in (None, tokenizer.unk_token_id):
            raise ValueError(f"the model's tokenizer has no {prompts.END_OF_TURN} token; only Qwen chat tokenizers are supported")

    def prompt_text(self, record: VideoQARecord) -> str:
        messages = prompts.build_messages(record, self.think, self.include_subtitles)
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, sample: VideoSample) -> dict:
        media: dict = {}
        grid_key, pixel_key = None, None
        if sample.frames is not None:
            frames = sample.frames
            if problem := timing_problem(sample.timestamps, len(frames)):
                # the readers check this (data/video.py: checked_clip); a sample built elsewhere must too,
                # or M-RoPE positions become meaningless without any error
                raise ValueError(f"video {sample.record.video} (record {sample.record.id}): {problem} "
                                 f"({np.asarray(sample.timestamps)[:8]}); timestamps must be finite, never decreasing, one per frame")
            media = {"videos": [frames], "video_metadata": [timing_metadata(sample.timestamps, frames.shape[1], frames.shape[2])]}
            grid_key, pixel_key = "video_grid_thw", "pixel_values_videos"
        elif sample.images:
            media = {"images": list(sample.images)}
            grid_key, pixel_key = "image_grid_thw", "pixel_values"
        if len(sample.images) != len(sample.record.images):
            raise ValueError(f"record {sample.record.id}: {len(sample.record.images)} image path(s) but "
                             f"{len(sample.images)} decoded image(s)")
        out = self.processor(
            text=[self.prompt_text(sample.record)], return_tensors="pt",
            do_resize=False, do_sample_frames=False, cap_pixels_per_frame=False, **media,
        )
        ids = out["input_ids"][0]
        types = out["mm_token_type_ids"][0]
        labels = None
        if self.mode == "sft":
            target = prompts.format_response(sample.record, self.think) + prompts.END_OF_TURN
            response = torch.tensor(self.processor.tokenizer(target, add_special_tokens=False)["input_ids"], dtype=ids.dtype)
            labels = torch.cat([torch.full_like(ids, IGNORE_INDEX), response])
            ids = torch.cat([ids, response])
            types = torch.cat([types, torch.zeros_like(response, dtype=types.dtype)])
        if grid_key is None:
            grid, pixels = torch.zeros((0, 3), dtype=torch.long), None
        else:
            grid, pixels = out[grid_key], out[pixel_key]
        spg = self.temporal_patch_size * frame_interval(sample.timestamps) if sample.frames is not None else 0.0
        return {"ids": ids, "types": types, "labels": labels, "pixels": pixels, "grid": grid, "spg": [spg] * len(grid)}

    def __call__(self, items: list[VideoSample | SkippedSample]) -> VideoBatch:
        skipped = [(s.record.id, s.reason) for s in items if isinstance(s, SkippedSample)]
        samples, encoded = [], []
        for sample in items:
            if isinstance(sample, SkippedSample):
                continue
            enc = self._encode(sample)
            if self.max_length is not None and len(enc["ids"]) > self.max_length:
                skipped.append((sample.record.id, f"{len(enc['ids'])} tokens exceed max_length={self.max_length}"))
                continue
            samples.append(sample)
            encoded.append(enc)
        return self._stack(samples, encoded, skipped)

    def _stack(self, samples: list[VideoSample], encoded: list[dict], skipped: list[tuple[str, str]]) -> VideoBatch:
        pad_id = self.processor.tokenizer.pad_token_id
        length = max((len(e["ids"]) for e in encoded), default=0)
        batch = len(encoded)
        input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        types = torch.zeros((batch, length), dtype=torch.int32)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long) if self.mode == "sft" else None
        for row, enc in enumerate(encoded):
            n = len(enc["ids"])
            span = slice(length - n, length) if self.mode == "prompt" else slice(0, n)  # left-pad prompts
            input_ids[row, span] = enc["ids"]
            attention[row, span] = 1
            types[row, span] = enc["types"]
            if labels is not None:
                labels[row, span] = enc["labels"]
        pixels = [e["pixels"] for e in encoded if e["pixels"] is not None]
        return VideoBatch(
            input_ids=input_ids,
            attention_mask=attention,
            mm_token_type_ids=types,
            pixel_values=torch.cat(pixels) if pixels else torch.zeros((0, self.patch_dim)),
            grid_thw=torch.cat([e["grid"] for e in encoded]) if encoded else torch.zeros((0, 3), dtype=torch.long),
            second_per_grid_ts=torch.tensor([t for e in encoded for t in e["spg"]], dtype=torch.float32),
            labels=labels,
            records=[s.record for s in samples],
            timestamps=[torch.from_numpy(np.asarray(s.timestamps if s.frames is not None else [], dtype=np.float64))
                        for s in samples],
            visual_items=[len(e["grid"]) for e in encoded],
            media_keys=[media_key(s.record, s.timestamps, e["grid"]) for s, e in zip(samples, encoded)],
            decode_seconds=sum(s.decode_seconds for s in samples),
            skipped=skipped,
        )
