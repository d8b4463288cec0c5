from fractions import Fraction

import av
import numpy as np
import pytest

from lightning_longrl.data import video as video_io
from lightning_longrl.data.video import FrameSampling, VideoDecodeError, fit_frame_size, read_video

FPS = 8
NUM = 64  # frames in the test video; frame i is a flat grey of level 4 * i


def _write(path, codec="libx264", size=64):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(FPS))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(NUM):
            frame = np.full((size, size, 3), 4 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("video") / "counter.mp4")


def frame_numbers(frames):
    return np.round(frames.reshape(len(frames), -1).mean(axis=1) / 4).astype(int)


@pytest.mark.parametrize("num_frames", [1, 7, 16, 64, 100])
def test_fixed_count_is_uniform_in_time_and_content_matches_timestamps(counter_video, num_frames):
    clip = read_video(counter_video, FrameSampling(num_frames=num_frames, max_pixels=64 * 64))
    assert clip.frames.shape == (num_frames, 56, 56, 3) and clip.frames.dtype == np.uint8
    assert clip.backend == "decord"
    assert clip.duration == pytest.approx(NUM / FPS)
    # each returned frame is the one on screen at its timestamp
    assert (frame_numbers(clip.frames) == np.round(clip.timestamps * FPS)).all()
    assert (np.diff(clip.timestamps) >= 0).all()
    assert 0 <= clip.timestamps[0] and clip.timestamps[-1] < NUM / FPS
    # targets are centres of equal bins: frame k covers [k/8, (k+1)/8)
    centres = (np.arange(num_frames) + 0.5) * (NUM / FPS) / num_frames
    assert np.allclose(clip.timestamps, np.floor(centres * FPS) / FPS)


@pytest.mark.parametrize(("fps", "max_frames", "expected"), [(2.0, 512, 16), (0.5, 512, 4), (8.0, 10, 10), (100.0, 512, 512)])
def test_rate_sampling_with_cap(counter_video, fps, max_frames, expected):
    clip = read_video(counter_video, FrameSampling(num_frames=None, fps=fps, max_frames=max_frames, max_pixels=64 * 64))
    assert len(clip.frames) == expected == len(clip.timestamps)


def test_clip_window_keeps_timestamps_inside(counter_video):
    clip = read_video(counter_video, FrameSampling(num_frames=12, max_pixels=64 * 64), start=2.0, end=5.0)
    assert len(clip.frames) == 12
    assert clip.timestamps.min() >= 2.0 and clip.timestamps.max() < 5.0
    assert (frame_numbers(clip.frames) == np.round(clip.timestamps * FPS)).all()


def test_window_outside_video_is_an_error(counter_video):
    with pytest.raises(VideoDecodeError, match="outside"):
        read_video(counter_video, FrameSampling(num_frames=4), start=100.0)


def test_pyav_reader_agrees_with_decord(counter_video):
    sampling = FrameSampling(num_frames=20, max_pixels=64 * 64)
    a = read_video(counter_video, sampling, start=1.0, end=7.0)
    b = video_io._read_with_pyav(str(counter_video), sampling, 1.0, 7.0, 1)
    assert b.backend == "pyav"
    assert np.array_equal(a.timestamps, b.timestamps)
    assert np.abs(a.frames.astype(int) - b.frames).max() <= 1


def test_falls_back_to_pyav_when_decord_cannot_decode(tmp_path):
    try:
        path = _write(tmp_path / "av1.mp4", codec="libsvtav1")
    except Exception as err:  # pragma: no cover - depends on PyAV's bundled encoders
        pytest.skip(f"this PyAV build cannot write AV1: {err}")
    import decord

    with pytest.raises(Exception):  # noqa: B017 - decord raises its own DECORDError (or a RuntimeError)
        decord.VideoReader(str(path)).get_batch([0]).asnumpy()  # decord's FFmpeg has no AV1 decoder
    clip = read_video(path, FrameSampling(num_frames=8, max_pixels=64 * 64))
    assert clip.backend == "pyav"
    assert len(clip.frames) == 8
    assert (np.abs(frame_numbers(clip.frames) - np.round(clip.timestamps * FPS)) <= 1).all()


@pytest.mark.parametrize("content", [b"", b"this is not a video" * 100])
def test_unreadable_file_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        read_video(path, FrameSampling(num_frames=4))


def test_chunked_decoding_gives_the_same_frames(counter_video):
    whole = read_video(counter_video, FrameSampling(num_frames=40, max_pixels=64 * 64))
    chunked = read_video(counter_video, FrameSampling(num_frames=40, max_pixels=64 * 64, chunk_bytes=3 * 64 * 64 * 3))
    assert np.array_equal(whole.frames, chunked.frames)
    assert video_io._chunk_len(64, 64, FrameSampling(chunk_bytes=3 * 64 * 64 * 3)) == 3


@pytest.mark.parametrize(("hw", "budget", "multiple"),
                         [((1080, 1920), 448 * 448, 28), ((64, 64), 56 * 56, 28), ((100, 40), 32 * 32 * 4, 32)])
def test_frame_size_fits_budget_and_multiple(hw, budget, multiple):
    sampling = FrameSampling(max_pixels=budget, min_pixels=multiple**2, size_multiple=multiple)
    h, w = fit_frame_size(*hw, sampling)
    assert h % multiple == 0 and w % multiple == 0
    assert h * w <= budget
    assert abs(h / w - hw[0] / hw[1]) / (hw[0] / hw[1]) < 0.35


@pytest.mark.parametrize(("hw", "budget"), [((10, 1500), 56 * 56), ((2000, 40), 224 * 224), ((28, 5000), 448 * 448)])
def test_extreme_aspect_ratios_stay_within_budget(hw, budget):
    sampling = FrameSampling(max_pixels=budget, min_pixels=28 * 28)
    h, w = fit_frame_size(*hw, sampling)
    assert h * w <= budget and h % 28 == 0 and w % 28 == 0 and min(h, w) == 28


def test_aspect_ratio_beyond_200_is_rejected():
    with pytest.raises(ValueError, match="aspect ratio"):
        fit_frame_size(10, 2500, FrameSampling())


def test_budget_resizes_decoded_frames(counter_video):
    clip = read_video(counter_video, FrameSampling(num_frames=2, max_pixels=28 * 28))
    assert clip.frames.shape[1:] == (28, 28, 3)


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_frames=None, fps=None), dict(num_frames=8, fps=2.0), dict(num_frames=8193), dict(num_frames=None, fps=-1.0),
     dict(max_frames=0), dict(max_pixels=100, min_pixels=200)],
)
def test_invalid_sampling_is_rejected(kwargs):
    with pytest.raises(ValueError, match="FrameSampling"):
        FrameSampling(**kwargs)


def test_up_to_8192_frames_allowed():
    assert FrameSampling(num_frames=8192).num_frames == 8192
    assert FrameSampling(num_frames=None, fps=30.0, max_frames=8192).max_frames == 8192


def test_pyav_seeks_over_long_gaps_and_still_picks_the_right_frames(tmp_path):
    """A 60 s video sampled sparsely: the PyAV reader seeks between targets (gap > 3 s)."""
    fps, count = 4, 240
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width = stream.height = 64
        stream.pix_fmt, stream.gop_size = "yuv420p", 8
        for i in range(count):  # frame number written as two grey levels: top = 4 * (i % 60), bottom = 60 * (i // 60)
            frame = np.empty((64, 64, 3), np.uint8)
            frame[:32], frame[32:] = 4 * (i % 60), 60 * (i // 60)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())

    def numbers(frames):
        top = np.round(frames[:, 4:28].reshape(len(frames), -1).mean(1) / 4)
        bottom = np.round(frames[:, 36:60].reshape(len(frames), -1).mean(1) / 60)
        return (top + 60 * bottom).astype(int)

    sampling = FrameSampling(num_frames=6, max_pixels=64 * 64)
    seeking = video_io._read_with_pyav(str(path), sampling, None, None, 1)
    assert (numbers(seeking.frames) == np.round(seeking.timestamps * fps)).all()
    assert np.array_equal(seeking.timestamps, read_video(path, sampling).timestamps)
    dense = video_io._read_with_pyav(str(path), FrameSampling(num_frames=120, max_pixels=64 * 64), 5.0, 50.0, 1)
    assert (numbers(dense.frames) == np.round(dense.timestamps * fps)).all()


def test_primary_reader_can_be_pyav(counter_video):
    clip = read_video(counter_video, FrameSampling(num_frames=5, max_pixels=64 * 64, reader="pyav"))
    assert clip.backend == "pyav"
    with pytest.raises(ValueError, match="reader must be"):
        FrameSampling(reader="opencv")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_frames", [3, 4, 9])
def test_pyav_reader_terminates_with_keyframes_further_apart_than_the_seek_gap(tmp_path, num_frames):
    """x264's default GOP is ~10 s; seeking to a target whose keyframe lies far before it must not loop."""
    fps, count = 10, 200
    path = tmp_path / "long_gop.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width = stream.height = 64
        stream.pix_fmt, stream.gop_size = "yuv420p", 300  # a single keyframe
        for i in range(count):
            frame = np.full((64, 64, 3), i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    clip = video_io._read_with_pyav(str(path), FrameSampling(num_frames=num_frames, max_pixels=64 * 64), None, None, 1)
    decord_clip = read_video(path, FrameSampling(num_frames=num_frames, max_pixels=64 * 64))
    assert np.allclose(clip.timestamps, decord_clip.timestamps, atol=1e-5)  # same frames, targets on frame boundaries
    levels = clip.frames.reshape(num_frames, -1).mean(1)
    assert np.abs(levels - clip.timestamps * fps).max() <= 2
