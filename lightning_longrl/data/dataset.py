"""A map-style dataset that decodes sampled frames of each record's video (in DataLoader workers)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from lightning_longrl.data.records import VideoQARecord, read_records
from lightning_longrl.data.video import FrameSampling, VideoDecodeError, read_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSample:
    """A record with the frames sampled from its video."""

    record: VideoQARecord
    frames: np.ndarray  # [F, H, W, 3] uint8
    timestamps: np.ndarray  # [F] seconds
    decode_seconds: float = 0.0  # wall time spent reading the frames


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


def resolve_video_path(record: VideoQARecord, video_root: str | Path | None) -> Path:
    path = Path(record.video).expanduser()
    if not path.is_absolute() and video_root is not None:
        path = Path(video_root).expanduser() / path
    return path


class VideoQADataset(Dataset):
    """Records of one JSONL file; ``__getitem__`` decodes the frames of the record's clip.

    Args:
        records_file: JSONL file of records (see ``docs/data_format.md``).
        video_root: folder that relative ``video`` paths are resolved against (default: the
            JSONL file's folder).
        sampling: which frames to decode and at what size.
        require_reasoning: fail at construction when a record lacks ``reasoning`` (SFT needs it).
    """

    def __init__(
        self,
        records_file: str | Path,
        sampling: FrameSampling,
        video_root: str | Path | None = None,
        require_reasoning: bool = False,
    ) -> None:
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
        return dataset

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VideoSample | SkippedSample:
        record = self.records[index]
        path = resolve_video_path(record, self.video_root)
        if not path.is_file():
            return SkippedSample(record, f"video file not found: {path}")
        began = time.perf_counter()
        try:
            clip = read_video(path, self.sampling, start=record.start, end=record.end)
        except VideoDecodeError as err:
            return SkippedSample(record, str(err))
        return VideoSample(record, clip.frames, clip.timestamps, time.perf_counter() - began)
