"""Real-world kinds of video file (tests/video_corpus.py): each read gives the frames on screen at
the times it reports, or a clear refusal; never one frame repeated with nonsense times."""

from __future__ import annotations

import json

import numpy as np
import pytest
from video_corpus import CASES, Case, H, W, frame_index

from lightning_longrl.data import video as video_io
from lightning_longrl.data.collate import VideoQACollator
from lightning_longrl.data.dataset import SkippedSample, VideoQADataset, VideoSample
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.data.video import FrameSampling, VideoDecodeError, read_video

BY_NAME = {case.name: case for case in CASES}
SAMPLING = dict(max_pixels=W * H)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return {case.name: case.make(folder) for case in CASES}


def assert_frames_match_times(case: Case, clip) -> None:
    """Each frame is the one on screen at its reported time, within one frame either way."""
    times = np.asarray(clip.timestamps)
    assert np.all(np.isfinite(times)) and np.all(np.diff(times) >= 0), times
    for frame, t in zip(clip.frames, times):
        if case.rotation:
            assert frame.shape[:2] == (W, H), f"{case.name}: frames must be turned upright, got {frame.shape}"
        i = case.index(frame)
        lo, hi = case.times(max(i - 1, 0)), case.times(i + 1)
        assert lo - 1e-3 <= t <= hi + 1e-3, f"{case.name}: frame {i} (on screen {case.times(i):.3f} s) reported at {t:.3f} s"


@pytest.mark.parametrize("name", [c.name for c in CASES])
@pytest.mark.parametrize("num_frames", [8, 32])
def test_every_file_gives_the_right_frames_or_a_named_refusal(corpus, name, num_frames):
    case, path = BY_NAME[name], corpus[name]
    if case.skip:
        with pytest.raises(VideoDecodeError, match=case.skip) as err:
            read_video(path, FrameSampling(num_frames=num_frames, **SAMPLING))
        assert str(path) in str(err.value)
        return
    clip = read_video(path, FrameSampling(num_frames=num_frames, **SAMPLING))
    assert len(clip.frames) == len(clip.timestamps) == num_frames
    assert clip.frames.shape[1] % 28 == 0 and clip.frames.shape[2] % 28 == 0
    assert clip.duration > 0 and clip.timestamps[-1] - clip.timestamps[0] <= clip.duration
    if case.times is not None:
        assert_frames_match_times(case, clip)
        if name not in ("one_frame.mp4", "cut_midway.mkv") and num_frames == 8:
            assert len({case.index(f) for f in clip.frames}) == 8, "eight targets 0.75 s apart are eight frames"
    if name == "long_low_rate.mkv":
        assert clip.duration == pytest.approx(600, abs=1.5)
        assert np.allclose(np.diff(clip.timestamps), 600 / num_frames, atol=1.01)


@pytest.mark.parametrize("name", [c.name for c in CASES if c.times and not c.skip and not c.decord_wrong])
def test_decord_and_pyav_agree_where_decord_is_used(corpus, name):
    case, path = BY_NAME[name], corpus[name]
    sampling = FrameSampling(num_frames=16, **SAMPLING)
    pyav = video_io._read_with_pyav(str(path), sampling, None, None, 1)
    assert_frames_match_times(case, pyav)
    try:
        decord = video_io._read_with_decord(str(path), sampling, None, None, 1)
    except Exception:  # noqa: BLE001 - decord cannot read it: read_video falls back to PyAV (checked above)
        return
    assert_frames_match_times(case, decord)
    assert np.abs(decord.timestamps - pyav.timestamps).max() <= 1 / 24 + 1e-3


@pytest.mark.parametrize("name", [c.name for c in CASES if c.decord_wrong])
def test_files_where_decord_returns_wrong_frames_are_read_with_pyav(corpus, name):
    """decord's own random access on these files returns frames from another time, or one frame
    with "no timestamp" times, without an error: read_video must not use it. When this test's
    second half fails, decord has been fixed for that kind of file (DECORD_EXACT_B_FRAME_CODECS in
    data/video.py may grow)."""
    case, path = BY_NAME[name], corpus[name]
    assert video_io._decord_unreliable(str(path)), f"{name} must be routed to PyAV"
    assert read_video(path, FrameSampling(num_frames=8, **SAMPLING)).backend == "pyav"
    sampling = FrameSampling(num_frames=16, **SAMPLING)
    try:
        clip = video_io._read_with_decord(str(path), sampling, None, None, 1)
    except Exception:  # noqa: BLE001 - unusable timestamps: refused, as it should be
        return
    with pytest.raises(AssertionError):
        assert_frames_match_times(case, clip)


def test_out_of_order_times_give_distinct_frames_at_sorted_times(corpus):
    """AVI with B-frames: PyAV hands frames over in presentation order with times in decode order
    (0.042, 0.167, 0.125, 0.208, 0.083, ...); the reader keeps the order and sorts the times
    (counted from the first frame, as everywhere)."""
    import av

    path = corpus["h264_b_frames.avi"]
    with av.open(str(path)) as container:
        decoded = [(float(f.time), frame_index(f.to_ndarray(format="rgb24"))) for f in container.decode(video=0)]
    times = [t for t, _ in decoded]
    assert times != sorted(times), "the file must have out-of-order times for this test to mean anything"
    clip = read_video(path, FrameSampling(num_frames=48, **SAMPLING))
    ids = [frame_index(f) for f in clip.frames]
    assert ids == [i for _, i in decoded] and len(set(ids)) == 48
    assert np.allclose(clip.timestamps, np.sort(times) - min(times))


def test_raw_stream_without_times_is_timed_by_rate_with_one_warning(corpus, caplog):
    video_io._UNTIMED_FILES_WARNED.clear()
    path = corpus["no_pts.h264"]
    with caplog.at_level("WARNING", logger="lightning_longrl.data.video"):
        for _ in range(2):
            clip = read_video(path, FrameSampling(num_frames=8, **SAMPLING))
    warnings = [r for r in caplog.records if "without presentation times" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    assert clip.duration == pytest.approx(48 / 25)


def test_non_zero_start_reads_from_zero_in_both_readers_and_clips_follow(corpus):
    path = corpus["starts_at_2s.mp4"]
    for reader in ("decord", "pyav"):
        clip = read_video(path, FrameSampling(num_frames=12, reader=reader, **SAMPLING), start=0.5, end=1.5)
        assert 0.5 - 1e-3 <= clip.timestamps[0] and clip.timestamps[-1] < 1.5
        assert_frames_match_times(BY_NAME["starts_at_2s.mp4"], clip)


def test_dataset_skips_refused_files_with_the_reason(corpus, tmp_path):
    names = ["h264_b_frames.avi", "no_frames.mp4", "audio_only.m4a", "cut_before_index.mp4", "variable_rate.mkv"]
    rows = [{"id": n, "video": str(corpus[n]), "question": "q?", "answer": "A", "options": ["a", "b"]} for n in names]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoQADataset(tmp_path / "records.jsonl", FrameSampling(num_frames=8, **SAMPLING))
    items = [dataset[i] for i in range(len(rows))]
    kinds = {item.record.id: type(item) for item in items}
    assert kinds == {"h264_b_frames.avi": VideoSample, "no_frames.mp4": SkippedSample, "audio_only.m4a": SkippedSample,
                     "cut_before_index.mp4": SkippedSample, "variable_rate.mkv": VideoSample}
    for item in items:
        if isinstance(item, SkippedSample):
            assert item.record.video in item.reason


def test_collator_refuses_non_finite_times_naming_the_file(tiny_checkpoints):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(tiny_checkpoints["qwen2_5_vl"]))
    record = VideoQARecord(id="r1", video="clips/broken.avi", question="q?", answer="A", options=("a", "b"))
    frames = np.zeros((4, 56, 56, 3), np.uint8)
    bad = VideoSample(record, frames, np.array([0.0, np.nan, 1.0, 1.5]), 0.0)
    with pytest.raises(ValueError, match="clips/broken.avi"):
        VideoQACollator(processor, mode="prompt")([bad])
    good = VideoSample(record, frames, np.array([0.0, 0.5, 1.0, 1.5]), 0.0)
    assert len(VideoQACollator(processor, mode="prompt")([good])) == 1


def test_eval_and_filter_answer_the_readable_files_and_count_the_rest(corpus, tmp_path, tiny_checkpoints):
    """The whole corpus as a benchmark: ``eval`` and ``filter`` run to the end; every refused file
    is counted as unreadable with its reason, every other question is answered on its frames."""
    from lightning_longrl.curate.difficulty import FilterConfig, difficulty_filter
    from lightning_longrl.eval.runner import PREDICTIONS, EvalConfig, evaluate

    rows = [{"id": c.name, "video": str(corpus[c.name]), "question": "Which block lights first?", "answer": "A",
             "options": ["top left", "bottom right"], "reasoning": "it starts top left."} for c in CASES]
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused = {c.name for c in CASES if c.skip}
    model = str(tiny_checkpoints["qwen2_5_vl"])
    common = dict(model=model, data=str(data), num_frames=8, max_pixels=W * H, max_new_tokens=8, batch_size=4,
                  num_workers=0, progress=False)
    result = evaluate(EvalConfig(output_dir=str(tmp_path / "eval"), **common))
    assert result.metrics["questions"] == len(CASES) and result.metrics["unreadable"] == len(refused)
    by_id = {r["id"]: r for r in map(json.loads, (tmp_path / "eval" / PREDICTIONS).read_text().splitlines())}
    assert {i for i, r in by_id.items() if r["unreadable"]} == refused
    assert all(by_id[n]["frames"] == 8 for n in by_id if n not in refused)
    summary = difficulty_filter(FilterConfig(output_dir=str(tmp_path / "filter"), k=2, **common))
    assert summary["questions"] == len(CASES) and summary["unreadable"] == len(refused)
    assert summary["sft"] + summary["rl"] == len(CASES) - len(refused)


@pytest.mark.slow
def test_fit_trains_on_the_readable_files_and_counts_the_rest(corpus, tmp_path, tiny_checkpoints):
    """SFT through Lightning over the whole corpus (one epoch): every step runs, the refused files
    are counted as unusable videos (below the run's limit) and nothing else is."""
    import lightning as L
    import torch

    from lightning_longrl import SFTModule
    from lightning_longrl.datamodules import LongVideoDataModule
    from lightning_longrl.models.config import ModelConfig

    rows = [{"id": c.name, "video": str(corpus[c.name]), "question": "Which block lights first?", "answer": "A",
             "options": ["top left", "bottom right"], "reasoning": "it starts top left."} for c in CASES]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = LongVideoDataModule(train_file=str(tmp_path / "train.jsonl"), num_frames=8, max_pixels=W * H, batch_size=2,
                               num_workers=0)
    module = SFTModule(ModelConfig(path=str(tiny_checkpoints["qwen2_5_vl"])),
                       optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, data)
    assert trainer.global_step == (len(CASES) + 1) // 2
    assert data.bad_videos == sum(1 for c in CASES if c.skip)
    assert data._bad_ids == {c.name for c in CASES if c.skip}


@pytest.mark.slow
def test_curate_captions_the_readable_files_and_counts_the_rest(corpus, tmp_path, tiny_checkpoints):
    """The corpus as a folder of videos to curate (tiny local models): every file with a video
    suffix is listed, the refused ones are counted as unreadable, every clip of the others gets a
    caption, and the run finishes."""
    import shutil

    from lightning_longrl.curate.backends import BackendConfig
    from lightning_longrl.curate.pipeline import VIDEO_SUFFIXES, CurateConfig, curate

    folder = tmp_path / "videos"
    folder.mkdir()
    listed = [c for c in CASES if corpus[c.name].suffix in VIDEO_SUFFIXES]
    for case in CASES:
        shutil.copy(corpus[case.name], folder / case.name)
    model = BackendConfig(kind="hf", model=str(tiny_checkpoints["qwen2_5_vl"]), max_new_tokens=6, dtype="float32",
                          batch_size=8)
    summary = curate(CurateConfig(videos=str(folder), output_dir=str(tmp_path / "out"), captioner=model, writer=model,
                                  clip_seconds=60.0, frames_per_clip=4, max_pixels=W * H, families=["temporal"],
                                  progress=False))
    assert summary.videos == len(listed)
    assert summary.unreadable_videos == sum(1 for c in listed if c.skip)
    assert summary.captions == summary.clips >= len(listed) - summary.unreadable_videos
