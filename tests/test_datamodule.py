import logging

import pytest

from lightning_longrl.data.records import RecordError
from lightning_longrl.datamodules import BadVideoLimitError, LongVideoDataModule

from helpers import copy_dataset_with, sft_run


@pytest.fixture
def checkpoint(tiny_checkpoints):
    return tiny_checkpoints["qwen2_vl"]


def edit_train_line(data_dir, index, old, new):
    """Replace text on one line (0-based) of the copied train.jsonl."""
    path = data_dir / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[index] = lines[index].replace(old, new)
    path.write_text("\n".join(lines) + "\n")


def test_malformed_record_stops_before_training(tmp_path, checkpoint, synth_dir):
    data_dir = copy_dataset_with(synth_dir, tmp_path / "data", {})
    edit_train_line(data_dir, 4, '"options": [', '"options": 7, "x": [')
    trainer, module, data = sft_run(tmp_path, checkpoint, data_dir)
    with pytest.raises(RecordError, match=r"train.jsonl:5: field 'options'"):
        trainer.fit(module, data)
    assert trainer.global_step == 0


def test_sft_needs_reasoning_on_every_record(tmp_path, checkpoint, synth_dir):
    data_dir = copy_dataset_with(synth_dir, tmp_path / "data", {})
    edit_train_line(data_dir, 2, '"reasoning"', '"notes"')
    trainer, module, data = sft_run(tmp_path, checkpoint, data_dir)
    with pytest.raises(ValueError, match=r"train.jsonl: 1 record\(s\) have no 'reasoning'"):
        trainer.fit(module, data)


def test_unreadable_videos_are_skipped_counted_and_logged(tmp_path, checkpoint, synth_dir, caplog):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    data_dir = copy_dataset_with(synth_dir, tmp_path / "data", {0: str(broken), 1: str(empty), 2: "videos/missing.mp4"})
    trainer, module, data = sft_run(tmp_path, checkpoint, data_dir, max_steps=100, max_bad_videos=3,
                                    trainer_kwargs={"max_epochs": 1, "max_steps": -1})
    with caplog.at_level(logging.WARNING):
        trainer.fit(module, data)
    assert data.bad_videos == 3
    assert trainer.logged_metrics["data/skipped_videos"] == 3
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "broken.mp4" in warned and "empty.mp4" in warned and "missing.mp4" in warned
    assert trainer.global_step > 0  # the readable samples still trained


def test_too_many_unreadable_videos_stop_the_run(tmp_path, checkpoint, synth_dir):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage" * 100)
    data_dir = copy_dataset_with(synth_dir, tmp_path / "data", {i: str(broken) for i in range(6)})
    trainer, module, data = sft_run(tmp_path, checkpoint, data_dir, max_steps=100, max_bad_videos=2,
                                    trainer_kwargs={"max_epochs": 1, "max_steps": -1})
    with pytest.raises(BadVideoLimitError, match="more than max_bad_videos=2"):
        trainer.fit(module, data)


def test_decoding_runs_in_worker_processes(tmp_path, checkpoint, synth_dir):
    trainer, module, data = sft_run(tmp_path, checkpoint, synth_dir, max_steps=2, num_workers=1)
    trainer.fit(module, data)
    assert trainer.global_step == 2


def test_missing_split_and_processor_are_explained(synth_dir):
    data = LongVideoDataModule(train_file=str(synth_dir / "train.jsonl"))
    with pytest.raises(RuntimeError, match="needs the model's processor"):
        data.dataset("fit")
    with pytest.raises(ValueError, match="`test_file` is not set"):
        data.dataset("test")


def test_training_clips_draw_their_frame_count_from_train_num_frames(synth_dir):
    """Each training sample gets one of the listed frame counts (the same on every epoch and
    rerun); evaluation splits keep num_frames."""
    from collections import Counter

    from lightning_longrl.data.dataset import VideoQADataset
    from lightning_longrl.data.video import FrameSampling

    train = VideoQADataset(synth_dir / "train.jsonl", FrameSampling(num_frames=8, max_pixels=28 * 28),
                           frame_choices=(4, 8), seed=3)
    counts = [len(train[i].frames) for i in range(len(train))]
    assert set(counts) == {4, 8} and Counter(counts)[4] >= 2
    again = VideoQADataset(synth_dir / "train.jsonl", FrameSampling(num_frames=8, max_pixels=28 * 28),
                           frame_choices=(4, 8), seed=3)
    assert [len(again[i].frames) for i in range(len(again))] == counts
    plain = VideoQADataset(synth_dir / "val.jsonl", FrameSampling(num_frames=8, max_pixels=28 * 28))
    assert {len(plain[i].frames) for i in range(len(plain))} == {8}
    with pytest.raises(ValueError, match="cannot be combined with fps"):
        LongVideoDataModule(train_file=str(synth_dir / "train.jsonl"), fps=1.0, num_frames=None, train_num_frames=[4, 8])


def test_frame_cache_returns_the_decoded_clip_and_stays_within_its_budget(synth_dir, checkpoint):
    """A cached read is the same clip as a fresh decode; the cache drops the least recently used
    clips beyond its budget; only the training split of the data module caches."""
    import numpy as np

    from lightning_longrl.data.dataset import VideoQADataset
    from lightning_longrl.data.video import FrameSampling
    from lightning_longrl.models.config import ModelConfig, load_processor

    sampling = FrameSampling(num_frames=8, max_pixels=28 * 28)
    fresh = VideoQADataset(synth_dir / "train.jsonl", sampling)
    clip_bytes = fresh[0].frames.nbytes + fresh[0].timestamps.nbytes
    cached = VideoQADataset(synth_dir / "train.jsonl", sampling, frame_cache_mb=2.5 * clip_bytes / 2**20)
    for _ in range(2):  # two epochs over three videos with room for two clips
        for i in range(3):
            sample = cached[i]
            assert np.array_equal(sample.frames, fresh[i].frames)
            assert np.array_equal(sample.timestamps, fresh[i].timestamps)
    cache = cached.frame_cache
    assert len(cache.entries) == 2 and cache.bytes <= cache.max_bytes
    assert cache.hits == 0 and cache.misses == 6, "LRU with room for 2 of 3 clips read in a cycle never hits"
    assert cached[2] is not None and cache.hits == 1, "the most recent clip is kept"
    with pytest.raises(ValueError, match="frame_cache_mb"):
        VideoQADataset(synth_dir / "train.jsonl", sampling, frame_cache_mb=-1)
    data = LongVideoDataModule(train_file=str(synth_dir / "train.jsonl"), val_file=str(synth_dir / "val.jsonl"),
                               num_frames=8, max_pixels=28 * 28, frame_cache_mb=64,
                               processor=load_processor(ModelConfig(path=str(checkpoint))))
    data.setup("fit")
    assert data.dataset("fit").frame_cache is not None and data.dataset("validate").frame_cache is None

