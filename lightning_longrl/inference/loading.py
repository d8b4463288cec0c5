"""A model loaded for answering questions, and the batches of questions it answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lightning_longrl.data.collate import VideoQACollator
from lightning_longrl.data.dataset import VideoQADataset
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.models.config import ModelConfig, load_model
from lightning_longrl.models.video_lm import AttnImplementation, Dtype, VideoLanguageModel


def resolve_device(device: str) -> str:
    """``auto``: CUDA when available, else CPU."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_inference_model(path: str, dtype: Dtype, attn_implementation: AttnImplementation, device: str) -> VideoLanguageModel:
    """A model for answering questions (eval, frame scaling, the difficulty filter), in eval mode."""
    model = load_model(ModelConfig(path=path, dtype=dtype, attn_implementation=attn_implementation))
    return model.to(resolve_device(device)).eval()


def question_loader(model: VideoLanguageModel, records: list[VideoQARecord], data_file: str | Path,
                    video_root: str | None, sampling: FrameSampling, think: bool, include_subtitles: bool,
                    batch_size: int, num_workers: int) -> DataLoader:
    """Prompt-mode batches of ``records`` (in order), frames decoded in ``num_workers`` workers at
    the model's frame-size multiple; relative videos resolve against ``video_root`` or the file's folder."""
    data_file = Path(data_file)
    sampling = dataclasses.replace(sampling, size_multiple=model.frame_size_multiple)
    dataset = VideoQADataset.from_records(records, sampling, video_root or data_file.parent, data_file)
    collate = VideoQACollator(model.processor, mode="prompt", think=think, include_subtitles=include_subtitles)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
