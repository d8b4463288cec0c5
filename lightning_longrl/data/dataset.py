"""A map-style dataset that decodes each record's media in DataLoader workers: the sampled frames
of its video, its images, or nothing for a text-only question."""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from lightning_longrl.data.image import ImageDecodeError, read_image
from lightning_longrl.data.records import VideoQARecord, read_records
from lightning_longrl.data.video import FrameSampling, VideoClip, VideoDecodeError, read_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSample:
    """A record with its decoded media: the frames sampled from its video, its images, or none."""

    record: VideoQARecord
    frames: np.ndarray | None  # [F, H, W, 3] uint8; None without a video
    timestamps: np.ndarray | None  # [F] seconds; None without a video
    decode_seconds: float = 0.0  # wall time spent reading the media
    images: tuple[np.ndarray, ...] = ()  # [H_i, W_i, 3] uint8 each, in the record's order


@dataclass(frozen=True)
class SkippedSample:
    """A record whose video could not be used; the collator drops it and reports why."""

    record: VideoQARecord
    reason: str


def portable_video_path(video: str | Path, records_dir: str | Path) -> str:
    """How a records file in ``records_dir`` should name ``video``: relative to that folder when the
    video is inside it or a sibling tree (at most one ``..``), absolute otherwise."""
    video, records_dir = Path(video).resolve(), Path(records_dir).resolve()
    relative = os.path.relpath(video, records_dir)
    return relative if not relative.startswith(os.pardir + os.sep + os.pardir) else str(video)


def resolve_media_path(name: str, video_root: str | Path | None) -> Path:
    """A record's ``video`` or image path, relative ones taken from ``video_root``."""
    path = Path(name).expanduser()
    if not path.is_absolute() and video_root is not None:
        path = Path(video_root).expanduser() / path
    return path


def resolve_video_path(record: VideoQARecord, video_root: str | Path | None) -> Path:
    if record.video is None:
        raise ValueError(f"record {record.id!r} has no video")
    return resolve_media_path(record.video, video_root)


class FrameCache:
    """Decoded clips kept in this process's memory, least recently used dropped beyond ``max_mb``.

    For a training split read for many epochs (the demo reads each of its 1,000 SFT videos six
    times): every clip is decoded once per DataLoader worker (whose copy lives as long as the
    worker; the training loader's workers are persistent). Cached clips are the same arrays a
    fresh decode returns, so training is unchanged.
    """

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.entries: OrderedDict[tuple, VideoClip] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> VideoClip | None:
        clip = self.entries.get(key)
        if clip is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return clip

    def put(self, key: tuple, clip: VideoClip) -> None:
        size = clip.frames.nbytes + clip.timestamps.nbytes
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = clip
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.frames.nbytes + dropped.timestamps.nbytes


class VideoQADataset(Dataset):
    """Records of one JSONL file; ``__getitem__`` decodes the frames of the record's clip.

    Args:
        records_file: JSONL file of records (see ``docs/data_format.md``).
        video_root: folder that relative ``video`` paths are resolved against (default: the
            JSONL file's folder).
        sampling: which frames to decode and at what size.
        require_reasoning: fail at construction when a record lacks ``reasoning`` (SFT needs it).
        frame_choices: frame counts to draw from, one per record (fixed by ``seed`` and the
            record's index), instead of ``sampling.num_frames`` for all: training on several
            frame counts keeps a model good at all of them.
        seed: seed of the frame-count draw.
        frame_cache_mb: keep decoded clips in memory, up to this many MB per process
            (:class:`FrameCache`); 0 decodes every time.
    """

    def __init__(
        self,
        records_file: str | Path,
        sampling: FrameSampling,
        video_root: str | Path | None = None,
        require_reasoning: bool = False,
        frame_choices: tuple[int, ...] | None = None,
        seed: int = 0,
        frame_cache_mb: float = 0,
    ) -> None:
        if frame_cache_mb < 0:
            raise ValueError(f"frame_cache_mb must be >= 0, got {frame_cache_mb}")
        self.frame_choices = tuple(frame_choices) if frame_choices else None
        self.seed = seed
        self.frame_cache = FrameCache(frame_cache_mb) if frame_cache_mb > 0 else None
        if self.frame_choices is not None:
            if sampling.num_frames is None:
                raise ValueError("frame_choices replace num_frames; they cannot be combined with fps sampling")
            for n in self.frame_choices:
                replace(sampling, num_frames=n)  # each count validated like num_frames
        self.records_file = Path(records_file)
        self.records = read_records(self.records_file)
        if not self.records:
            raise ValueError(f"{self.records_file}: no records")
        if require_reasoning:
            missing = [i for i, r in enumerate(self.records) if not r.reasoning]
            if missing:
                raise ValueError(
                    f"{self.records_file}: {len(missing)} record(s) have no 'reasoning' (first: id "
                    f"{self.records[missing[0]].id!r}); chain-of-thought SFT needs it on every record"
                )
        self.video_root = Path(video_root) if video_root is not None else self.records_file.parent
        self.sampling = sampling

    @classmethod
    def from_records(cls, records: list[VideoQARecord], sampling: FrameSampling, video_root: str | Path,
                     source: str | Path = "<records>") -> VideoQADataset:
        """A dataset over records already read (for example a benchmark's unanswered questions)."""
        dataset = cls.__new__(cls)
        dataset.records_file, dataset.records = Path(source), list(records)
        dataset.video_root, dataset.sampling = Path(video_root), sampling
        dataset.frame_choices, dataset.seed, dataset.frame_cache = None, 0, None
        return dataset

    def sampling_of(self, index: int) -> FrameSampling:
        """The frame sampling of record ``index`` (its drawn frame count with ``frame_choices``)."""
        if self.frame_choices is None:
            return self.sampling
        pick = np.random.default_rng([self.seed, index]).integers(len(self.frame_choices))
        return replace(self.sampling, num_frames=self.frame_choices[int(pick)])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VideoSample | SkippedSample:
        record = self.records[index]
        if record.video is None:
            return self._still(record)
        path = resolve_video_path(record, self.video_root)
        if not path.is_file():
            return SkippedSample(record, f"video file not found: {path}")
        began = time.perf_counter()
        sampling = self.sampling_of(index)
        key = (str(path), sampling, record.start, record.end)
        clip = self.frame_cache.get(key) if self.frame_cache is not None else None
        if clip is None:
            try:
                clip = read_video(path, sampling, start=record.start, end=record.end)
            except VideoDecodeError as err:
                return SkippedSample(record, str(err))
            if self.frame_cache is not None:
                self.frame_cache.put(key, clip)
        return VideoSample(record, clip.frames, clip.timestamps, time.perf_counter() - began)

    def _still(self, record: VideoQARecord) -> VideoSample | SkippedSample:
        """An image or text-only question: its images read at the frame budget (none for text)."""
        began = time.perf_counter()
        images = []
        for name in record.images:
            try:
                images.append(read_image(resolve_media_path(name, self.video_root), self.sampling))
            except ImageDecodeError as err:
                return SkippedSample(record, str(err))
        return VideoSample(record, None, None, time.perf_counter() - began, tuple(images))
