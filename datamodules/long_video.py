"""``LongVideoDataModule``: frame-sampled long videos with question/reasoning/answer records."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_longrl.data.collate import VideoBatch, VideoQACollator
from lightning_longrl.data.dataset import VideoQADataset
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.datamodules.resumable import ResumableDataLoader, ResumableSampler

log = logging.getLogger(__name__)

Stage = Literal["fit", "validate", "test", "predict"]


class BadVideoLimitError(RuntimeError):
    """More videos than allowed could not be read."""


class LongVideoDataModule(L.LightningDataModule):
    """Streams frame-sampled videos (and images, and text-only questions, mixed in one batch) and
    collates them with the model's own processor.

    Frames are decoded in DataLoader workers (decord, PyAV fallback); the collate function runs
    the model's Hugging Face processor and chat template. The processor is taken from the
    LightningModule (its ``processor`` attribute) unless one is passed to the constructor.

    Args:
        train_file: JSONL records for training.
        val_file: JSONL records for validation.
        test_file: JSONL records for testing.
        predict_file: JSONL records for prediction.
        video_root: folder relative ``video`` paths are resolved against (default: each JSONL
            file's own folder).
        num_frames: frames per video, uniform over the clip (64 when neither this nor ``fps`` is set).
        fps: frames per second of video time (capped at ``max_frames``), instead of ``num_frames``.
        max_frames: cap on frames per video when sampling by ``fps`` (up to 8192).
        train_num_frames: frame counts that training samples draw from (one per sample, fixed by
            ``shuffle_seed``), e.g. ``[16, 32, 64]``, so that the model learns to answer from
            sparse and dense sampling alike; validation, test and predict use ``num_frames``.
        max_pixels: per-frame pixel budget; frames are resized (aspect kept) to fit.
        min_pixels: frames smaller than this are upscaled.
        video_reader: primary video reader, ``decord`` or ``pyav`` (the other one is the fallback).
        batch_size: questions per training batch.
        eval_batch_size: questions per validation/test/predict batch (default ``batch_size``).
        num_workers: DataLoader worker processes decoding videos.
        think: prompts ask for ``<think>`` reasoning before the answer.
        include_subtitles: put record subtitles into the prompt.
        max_length: drop (and count) samples whose token count exceeds this.
        max_bad_videos: unreadable or empty videos (and unreadable images) are skipped with a
            warning until more than this many have been seen, then the run stops with an error.
        shuffle_seed: seed of the training data order (shuffled per epoch from ``(seed, epoch)``, and
            resumable mid-epoch from a checkpoint); default: the seed given to ``seed_everything``.
        frame_cache_mb: keep the training split's decoded clips in memory, up to this many MB per
            DataLoader worker (least recently used dropped first), so a small training set read
            for many epochs is decoded once; 0 (default) decodes every time.
        processor: the model's processor; by default the LightningModule's.
    """

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        video_root: str | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int = 512,
        train_num_frames: list[int] | None = None,
        max_pixels: int = 448 * 448,
        min_pixels: int = 28 * 28,
        video_reader: Literal["decord", "pyav"] = "decord",
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        think: bool = True,
        include_subtitles: bool = True,
        max_length: int | None = None,
        max_bad_videos: int = 10,
        shuffle_seed: int | None = None,
        frame_cache_mb: float = 0,
        processor: Any = None,
    ) -> None:
        super().__init__()
        if fps is not None and num_frames is not None:
            raise ValueError(f"LongVideoDataModule: set num_frames ({num_frames}) or fps ({fps}), not both")
        if fps is None and num_frames is None:
            num_frames = 64
        if train_num_frames is not None and fps is not None:
            raise ValueError(f"LongVideoDataModule: train_num_frames ({train_num_frames}) draws frame counts; "
                             f"it cannot be combined with fps ({fps})")
        self.save_hyperparameters(ignore=["processor"])
        self.files = {"fit": train_file, "validate": val_file, "test": test_file, "predict": predict_file}
        self.processor = processor
        self.bad_videos = 0
        self._bad_ids: set[str] = set()
        self.datasets: dict[str, VideoQADataset] = {}
        self._train_loader: ResumableDataLoader | None = None
        self._resume_position: dict[str, int] | None = None  # from a checkpoint, for the next train loader
        # validate the sampling settings now rather than in a worker
        self._sampling(28)

    # ------------------------------------------------------------------------------- helpers
    def _sampling(self, size_multiple: int) -> FrameSampling:
        hp = self.hparams
        return FrameSampling(
            num_frames=hp.num_frames, fps=hp.fps, max_frames=hp.max_frames, max_pixels=hp.max_pixels,
            min_pixels=hp.min_pixels, size_multiple=size_multiple, reader=hp.video_reader,
        )

    def _processor(self):
        if self.processor is not None:
            return self.processor
        module = self.trainer.lightning_module if self.trainer is not None else None
        processor = getattr(module, "processor", None)
        if processor is None:
            raise RuntimeError(
                "LongVideoDataModule needs the model's processor: attach it to a Trainer whose LightningModule "
                "has a `processor`, or pass `processor=` to the data module"
            )
        return processor

    def _collate_mode(self, stage: Stage) -> Literal["sft", "prompt"]:
        module = self.trainer.lightning_module if self.trainer is not None else None
        chooser = getattr(module, "collate_mode", None)
        return chooser(stage) if chooser is not None else ("sft" if stage in ("fit", "validate") else "prompt")

    def dataset(self, stage: Stage) -> VideoQADataset:
        """The dataset of a stage ("fit" is the training split), built on first use."""
        if stage not in self.datasets:
            path = self.files[stage]
            if path is None:
                name = {"fit": "train_file", "validate": "val_file", "test": "test_file", "predict": "predict_file"}[stage]
                raise ValueError(f"LongVideoDataModule: `{name}` is not set, so there is no {stage} data")
            video_processor = self._processor().video_processor
            multiple = video_processor.patch_size * video_processor.merge_size
            choices = self.hparams.train_num_frames if stage == "fit" else None
            self.datasets[stage] = VideoQADataset(
                path, self._sampling(multiple), video_root=self.hparams.video_root,
                require_reasoning=self._collate_mode(stage) == "sft" and self.hparams.think,
                frame_choices=tuple(choices) if choices else None, seed=self._seed(),
                frame_cache_mb=self.hparams.frame_cache_mb if stage == "fit" else 0,
            )
        return self.datasets[stage]

    def _loader(self, stage: Stage, shuffle: bool) -> DataLoader:
        hp = self.hparams
        batch_size = hp.batch_size if stage == "fit" else (hp.eval_batch_size or hp.batch_size)
        collate = VideoQACollator(
            self._processor(), mode=self._collate_mode(stage), think=hp.think,
            include_subtitles=hp.include_subtitles, max_length=hp.max_length,
        )
        kwargs = {"batch_size": batch_size, "num_workers": hp.num_workers, "collate_fn": collate,
                  "persistent_workers": hp.num_workers > 0 and stage == "fit"}
        if stage != "fit":
            return DataLoader(self.dataset(stage), shuffle=shuffle, **kwargs)
        trainer = self.trainer
        world, rank = 1, 0
        if trainer is not None and trainer.world_size > 1:
            # the strategy's data-parallel shape (MRSPStrategy: sequence-parallel ranks share samples)
            shards = trainer.strategy.distributed_sampler_kwargs
            world, rank = shards["num_replicas"], shards["rank"]
        seed = self._seed()
        sampler = ResumableSampler(self.dataset(stage), shuffle=shuffle, seed=seed, num_replicas=world, rank=rank)
        self._train_loader = ResumableDataLoader(self.dataset(stage), sampler, self._train_batches_done, **kwargs)
        if self._resume_position is not None:
            # Lightning may build the loader (to count steps for the LR schedule) before it would
            # restore a stateful loader; applying the checkpoint's position here covers both orders
            self._train_loader.load_state_dict(self._resume_position)
            self._resume_position = None
        return self._train_loader

    def _seed(self) -> int:
        hp = self.hparams
        return hp.shuffle_seed if hp.shuffle_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _train_batches_done(self) -> int:
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    # ------------------------------------------------------------------------ lightning hooks
    def setup(self, stage: str) -> None:
        # Parse the record files up front so that a malformed record fails before any training.
        self.dataset(stage)  # type: ignore[arg-type]
        if stage == "fit" and self.files["validate"]:
            self.dataset("validate")

    def train_dataloader(self) -> DataLoader:
        return self._loader("fit", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("validate", shuffle=False) if self.files["validate"] else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

    def on_before_batch_transfer(self, batch: VideoBatch, dataloader_idx: int) -> VideoBatch:
        """Count videos the workers could not use, warn, and stop past ``max_bad_videos``.

        With several processes the count is summed over all ranks at every batch, so the limit
        applies to the whole run and every rank stops at the same step.
        """
        for record_id, reason in batch.skipped:
            if record_id in self._bad_ids:
                continue  # the same file again in a later epoch
            self._bad_ids.add(record_id)
            self.bad_videos += 1
            log.warning("skipping sample %s: %s", record_id, reason)
        total = self.bad_videos
        if self.trainer is not None and self.trainer.world_size > 1:
            local = torch.tensor(float(self.bad_videos), device=self.trainer.strategy.root_device)
            total = int(self.trainer.strategy.reduce(local, reduce_op="sum").item())
        if total > self.hparams.max_bad_videos:
            last = f"; last on this rank: {batch.skipped[-1][0]}: {batch.skipped[-1][1]}" if batch.skipped else ""
            raise BadVideoLimitError(
                f"{total} samples had unusable videos or images, more than max_bad_videos={self.hparams.max_bad_videos}{last}"
            )
        batch.skipped_total = total
        return batch

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"bad_videos": self.bad_videos, "bad_ids": sorted(self._bad_ids)}
        if self._train_loader is not None:
            state["train_position"] = self._train_loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.bad_videos = int(state_dict.get("bad_videos", 0))
        self._bad_ids = set(state_dict.get("bad_ids", []))
        self._resume_position = state_dict.get("train_position")
