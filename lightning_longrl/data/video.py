"""Frame sampling from video files.

Frames are chosen by *time*: the sampler turns the request (a frame count, or a rate with a cap)
into target timestamps inside the clip, and each target takes the frame on screen at that moment
according to the container's presentation timestamps. A frame count in the header is never
trusted for timing. decord is the primary reader; when it cannot open or decode a file, PyAV
decodes it instead. Files on which decord's random access returns wrong frames (measured on
files the test suite writes, ``tests/video_corpus.py``: any AVI, whose frames carry no
presentation times; streams with B-frames other than H.264, such as MPEG-4 part 2 and HEVC,
where decord is 2 to 11 frames off) go to PyAV directly. PyAV decodes in presentation order; its
times are re-sorted within a short window (AVI with B-frames attaches them in decode order), and
frames without a time are timed by the average rate. Every clip is checked before it is
returned: finite times, never decreasing, inside the file; one that fails is a
:class:`VideoDecodeError` (the sample is skipped and counted). Long requests are decoded in
chunks whose size is bounded in bytes, and every chunk is resized to the per-frame pixel budget
before the next one is decoded.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MAX_FRAMES = 8192
"""Upper bound on frames per video (the paper's longest setting)."""

TIME_TOLERANCE = 1e-4
"""Seconds: a target this close before a frame's start already counts as that frame (decord reports
timestamps in float32, so a frame starting at 10.0 s may read as 9.9999996 s)."""

SEEK_GAP_SECONDS = 3.0
"""PyAV reader: seek rather than decode through gaps between targets longer than this."""

REORDER_WINDOW = 16
"""PyAV reader: decoded frames whose times arrive out of order (B-frames in AVI) are re-timed by
sorting the times within this many consecutive frames (the deepest B-pyramids reorder fewer)."""

DECORD_EXACT_B_FRAME_CODECS = ("h264",)
"""Codecs with B-frames on which decord's random access was measured to return the frame on
screen at its reported time (MP4, MOV, MKV); other B-frame codecs are read with PyAV."""


class VideoDecodeError(RuntimeError):
    """The video could not be opened or decoded by any backend, or it has no frames."""


@dataclass(frozen=True)
class FrameSampling:
    """How to sample frames from a video. Set either ``num_frames`` or ``fps``."""

    num_frames: int | None = 64
    """Fixed number of frames, spread uniformly over the clip."""
    fps: float | None = None
    """Frames per second of video time, capped at ``max_frames`` (then uniform over the clip)."""
    max_frames: int = 512
    """Cap for ``fps`` sampling."""
    max_pixels: int = 448 * 448
    """Per-frame pixel budget: frames are downscaled (aspect kept) to at most this many pixels."""
    min_pixels: int = 28 * 28
    """Frames smaller than this are upscaled."""
    size_multiple: int = 28
    """Frame height and width are rounded to a multiple of this (vision patch x spatial merge)."""
    chunk_bytes: int = 256 * 2**20
    """Bound on decoded-but-not-yet-resized frame memory (bytes of RGB at native size)."""
    reader: Literal["decord", "pyav"] = "decord"
    """Primary reader; the other one is the fallback. PyAV decodes sequentially (seeking over
    long gaps) and is the leaner choice for dense sampling (docs/benchmarks.md)."""

    def __post_init__(self) -> None:
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("FrameSampling: set exactly one of num_frames or fps")
        if self.num_frames is not None and not 1 <= self.num_frames <= MAX_FRAMES:
            raise ValueError(f"FrameSampling: num_frames must be in [1, {MAX_FRAMES}], got {self.num_frames}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"FrameSampling: fps must be > 0, got {self.fps}")
        if not 1 <= self.max_frames <= MAX_FRAMES:
            raise ValueError(f"FrameSampling: max_frames must be in [1, {MAX_FRAMES}], got {self.max_frames}")
        if self.min_pixels > self.max_pixels:
            raise ValueError("FrameSampling: min_pixels must not exceed max_pixels")
        if self.reader not in ("decord", "pyav"):
            raise ValueError(f"FrameSampling: reader must be 'decord' or 'pyav', got {self.reader!r}")
        if self.max_pixels < self.size_multiple**2:
            raise ValueError(f"FrameSampling: max_pixels must be at least size_multiple**2 = {self.size_multiple**2}")


class VideoClip(NamedTuple):
    """Frames sampled from one video."""

    frames: np.ndarray  # [F, H, W, 3] uint8, RGB
    timestamps: np.ndarray  # [F] float64, presentation time of each frame in seconds
    duration: float  # seconds covered by the whole file
    source_fps: float  # average frame rate of the file
    backend: str  # "decord" or "pyav"


def target_times(sampling: FrameSampling, clip_start: float, clip_end: float) -> np.ndarray:
    """Timestamps (seconds) to sample inside ``[clip_start, clip_end)``: the centres of equal bins."""
    span = max(clip_end - clip_start, 0.0)
    if sampling.num_frames is not None:
        count = sampling.num_frames
    else:
        count = min(sampling.max_frames, max(1, math.floor(span * sampling.fps + 1e-9)))
    return clip_start + (np.arange(count, dtype=np.float64) + 0.5) * (span / count)


MAX_ASPECT_RATIO = 200


def fit_frame_size(height: int, width: int, sampling: FrameSampling) -> tuple[int, int]:
    """Output (height, width): aspect ratio kept, sides multiples of ``size_multiple``, pixel count in budget.

    Raises:
        ValueError: the aspect ratio exceeds 200 (as Qwen's own resizing rejects).
    """
    if max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        raise ValueError(f"frame aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_ASPECT_RATIO}")
    m = sampling.size_multiple
    h, w = max(m, round(height / m) * m), max(m, round(width / m) * m)
    if h * w > sampling.max_pixels:
        beta = math.sqrt(height * width / sampling.max_pixels)
        h, w = max(m, math.floor(height / beta / m) * m), max(m, math.floor(width / beta / m) * m)
        # a side held at its minimum leaves the whole budget to the other one
        if h * w > sampling.max_pixels:
            if h == m:
                w = max(m, sampling.max_pixels // (h * m) * m)
            else:
                h = max(m, sampling.max_pixels // (w * m) * m)
    elif h * w < sampling.min_pixels:
        beta = math.sqrt(sampling.min_pixels / (height * width))
        h, w = math.ceil(height * beta / m) * m, math.ceil(width * beta / m) * m
    return h, w


def resize_frames(frames: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Resize ``[N, H, W, 3]`` uint8 frames to ``size`` (antialiased bilinear), into ``out`` if given.

    The resize runs on uint8 in channels-last layout (PyTorch's fast CPU path): no float copy of
    the frames is made, which keeps long requests from needing several times their memory.
    """
    if out is None:
        out = np.empty((len(frames), *size, 3), dtype=np.uint8)
    if frames.shape[1:3] == size:
        out[...] = frames
        return out
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # NCHW view, channels-last memory
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    out[...] = y.permute(0, 2, 3, 1).numpy()
    return out


def read_video(
    path: str | Path,
    sampling: FrameSampling,
    start: float | None = None,
    end: float | None = None,
    decode_threads: int = 1,
) -> VideoClip:
    """Sample frames from ``path`` between ``start`` and ``end`` seconds (whole file by default).

    ``sampling.reader`` is tried first (decord by default); if it cannot open or decode the file,
    the other reader is used.

    Args:
        path: video file.
        sampling: frame count or rate, pixel budget, chunking.
        start: clip start in seconds; ``None`` for the first frame.
        end: clip end in seconds; ``None`` for the end of the file.
        decode_threads: decoder threads (keep low inside DataLoader workers).

    Raises:
        VideoDecodeError: neither decord nor PyAV can read a frame.
    """
    path = str(path)
    errors = []
    order = (_read_with_decord, _read_with_pyav) if sampling.reader == "decord" else (_read_with_pyav, _read_with_decord)
    reason = _decord_unreliable(path)
    if reason:  # decord would return wrong frames without an error: PyAV only
        log.debug("%s: reading with PyAV (%s)", path, reason)
        order = (_read_with_pyav,)
    for backend in order:
        try:
            return checked_clip(backend(path, sampling, start, end, decode_threads), path)
        except VideoDecodeError:
            raise
        except Exception as err:  # noqa: BLE001 - any reader failure means "try the next reader"
            errors.append(f"{backend.__name__.removeprefix('_read_with_')}: {type(err).__name__}: {err}")
            log.debug("reader failed on %s: %s", path, errors[-1])
    raise VideoDecodeError(f"cannot decode video {path}: " + "; ".join(errors))


def timing_problem(timestamps: np.ndarray, num_frames: int) -> str | None:
    """Why ``timestamps`` cannot time ``num_frames`` frames (None when they can): there must be
    one per frame, at least one, all finite and never decreasing."""
    times = np.asarray(timestamps, dtype=np.float64)
    if len(times) == 0 or len(times) != num_frames:
        return f"{num_frames} frames and {len(times)} timestamps"
    if not np.all(np.isfinite(times)):
        return "non-finite frame timestamps"
    if np.any(np.diff(times) < 0):
        return "frame timestamps that go back in time"
    return None


def checked_clip(clip: VideoClip, path: str) -> VideoClip:
    """``clip`` if its timing is usable, else :class:`VideoDecodeError` naming the file and why:
    :func:`timing_problem`, and every timestamp inside the file (a frame period of slack)."""
    if problem := timing_problem(clip.timestamps, len(clip.frames)):
        raise VideoDecodeError(f"{path}: {clip.backend} returned {problem}")
    times = clip.timestamps
    slack = 1.0 / clip.source_fps if clip.source_fps > 0 else 1.0
    if not (np.isfinite(clip.duration) and clip.duration > 0):
        raise VideoDecodeError(f"{path}: {clip.backend} reports a duration of {clip.duration} s")
    if times[0] < -slack or times[-1] - times[0] > clip.duration + slack:
        raise VideoDecodeError(f"{path}: {clip.backend} frame timestamps [{times[0]:.3f}, {times[-1]:.3f}] s do not fit "
                               f"the file's {clip.duration:.3f} s")
    return clip


def _decord_unreliable(path: str) -> str | None:
    """Why decord's random access cannot be trusted on ``path`` (None when it can, or when PyAV
    cannot even read the header, in which case decord may still manage)."""
    try:
        import av

        with av.open(path) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if "avi" in container.format.name.split(","):
                return "AVI frames carry no presentation times"
            codec = stream.codec_context.name
            if stream.codec_context.has_b_frames and codec not in DECORD_EXACT_B_FRAME_CODECS:
                return f"{codec} stream with B-frames"
    except Exception:  # noqa: BLE001 - PyAV cannot probe it: let the readers try and report
        return None
    return None


def _clip_bounds(first: float, last_end: float, start: float | None, end: float | None, path: str) -> tuple[float, float]:
    clip_start = first if start is None else max(start, first)
    clip_end = last_end if end is None else min(end, last_end)
    if clip_end <= clip_start:
        raise VideoDecodeError(
            f"{path}: requested clip [{start}, {end}] s lies outside the video's [{first:.3f}, {last_end:.3f}] s"
        )
    return clip_start, clip_end


def _frame_starts_are_sane(starts: np.ndarray) -> bool:
    """Finite (not FFmpeg's "no timestamp", -2**63 ticks), never decreasing, and not all one value."""
    return bool(np.all(np.isfinite(starts)) and np.all(np.abs(starts) < 1e9) and np.all(np.diff(starts) >= 0)
                and (len(starts) < 2 or starts[-1] > starts[0]))


def _chunk_len(height: int, width: int, sampling: FrameSampling) -> int:
    return max(1, sampling.chunk_bytes // max(1, height * width * 3))


def _read_with_decord(
    path: str, sampling: FrameSampling, start: float | None, end: float | None, threads: int
) -> VideoClip:
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
    count = len(reader)
    if count == 0:
        raise RuntimeError("no frames")
    fps = float(reader.get_avg_fps() or 0.0) or 25.0
    spans = np.asarray(reader.get_frame_timestamp(np.arange(count)), dtype=np.float64).reshape(count, 2)
    starts = np.round(spans[:, 0], 6)  # float32 from decord; microseconds are plenty
    if not _frame_starts_are_sane(starts):
        # its seeking relies on the same timestamps, so its frames would be wrong too (measured: one
        # frame repeated): PyAV, which decodes in order, reads the file instead
        raise RuntimeError("unusable frame timestamps")
    last_end = float(spans[-1, 1])
    if not (np.isfinite(last_end) and last_end > starts[-1]):
        last_end = float(starts[-1]) + 1.0 / fps
    clip_start, clip_end = _clip_bounds(starts[0], last_end, start, end, path)
    targets = target_times(sampling, clip_start, clip_end)
    indices = np.clip(np.searchsorted(starts, targets + TIME_TOLERANCE, side="right") - 1, 0, count - 1)

    unique, inverse = np.unique(indices, return_inverse=True)
    decoded: np.ndarray | None = None
    step, lo = 1, 0
    while lo < len(unique):
        batch = reader.get_batch(unique[lo : lo + step].tolist()).asnumpy()
        if decoded is None:  # the first frame tells the native size, hence the output size and chunk length
            out_size = fit_frame_size(batch.shape[1], batch.shape[2], sampling)
            decoded = np.empty((len(unique), *out_size, 3), dtype=np.uint8)
            step = _chunk_len(batch.shape[1], batch.shape[2], sampling)
        resize_frames(batch, out_size, out=decoded[lo : lo + len(batch)])
        lo += len(batch)
        del batch
    return VideoClip(decoded[inverse], starts[indices], float(last_end - starts[0]), fps, "decord")


def _read_with_pyav(
    path: str, sampling: FrameSampling, start: float | None, end: float | None, threads: int
) -> VideoClip:
    fps, duration, first = _pyav_timing(path)
    frames, times, last = _pyav_sample(path, sampling, start, end, threads, fps, duration, first)
    if last is not None and last - first + 2.0 / fps < duration:
        # the stream ended well before the header's duration (a file cut short, or a header that
        # lies): sample over what is there instead of repeating the last frame
        log.warning("%s: the header promises %.3f s but the frames end at %.3f s; sampling what is there",
                    path, duration, last - first)
        duration = last - first + 1.0 / fps
        frames, times, _ = _pyav_sample(path, sampling, start, end, threads, fps, duration, first)
    return VideoClip(frames, times, float(duration), fps, "pyav")


def _pyav_timing(path: str) -> tuple[float, float, float]:
    """(average rate, duration from the header or by decoding, time of the first frame shown).

    The first frame's time is read from the frames, not the header: an AVI whose encoder delays
    B-frames says the stream starts at 0 and shows its first frame at one frame period."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise RuntimeError("no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        times = []
        for count, frame in enumerate(container.decode(stream), 1):
            if frame.time is not None:
                times.append(float(frame.time))
            if count >= REORDER_WINDOW:  # a raw stream has no times: do not decode all of it here
                break
    first = min(times) if times else start
    if duration is None or not duration > 0:
        duration = _probe_duration(path, first)
    return fps, duration, first


def _pyav_sample(
    path: str, sampling: FrameSampling, start: float | None, end: float | None, threads: int,
    fps: float, duration: float, first: float,
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Frames and times (from the first frame) for the targets; the last decoded time when the
    stream ended before every target had a frame of its own (else None)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = max(1, threads)
        # times are returned from the first frame, as decord does (a file whose first frame is
        # stamped 2.0 s reads from 0.0 s); the decode loop below works in the stream's own times
        rel_start, rel_end = _clip_bounds(0.0, duration, start, end, path)
        clip_start = first + rel_start
        targets = target_times(sampling, rel_start, rel_end) + first

        picker = _FramePicker(targets, sampling)
        gap = max(SEEK_GAP_SECONDS, 2.0 / fps)
        position, sought, last = clip_start, -math.inf, None
        while True:
            if position > first + gap:  # jump to the keyframe before the next target instead of decoding up to it
                container.seek(int(position / stream.time_base), stream=stream, backward=True, any_frame=False)
                sought = position
            jumped = False
            for t, frame in _presentation_times(container.decode(stream), path, fps, first):
                last = t
                if picker.offer(t, frame):
                    break
                upcoming = picker.upcoming()
                # Seek only towards a target not sought before: when keyframes are further apart than
                # the gap, the keyframe before a target is itself far from it, and seeking to the same
                # target again would loop forever.
                if upcoming is not None and upcoming - t > gap and upcoming > sought:
                    position, jumped = upcoming, True
                    break
            if not jumped:
                break
        ended_early = picker.upcoming() is not None
        frames, times = picker.finish()
    return frames, times - first, (last if ended_early else None)


_UNTIMED_FILES_WARNED: set[str] = set()
"""Files already warned about for frames without times (one warning per file and process)."""


def _presentation_times(frames: Iterable, path: str, fps: float, first: float) -> Iterator[tuple[float, object]]:
    """``(time, frame)`` in the order the decoder returns frames (presentation order): the decoded
    times, sorted within :data:`REORDER_WINDOW` consecutive frames (AVI with B-frames attaches them
    in decode order); a frame without a time takes the latest one's plus a frame period at the
    average rate (``first`` for the first), with one warning per file and process."""
    pending: deque = deque()  # frames decoded but not yet handed on, oldest first
    times: list[float] = []  # heap of their times
    latest = None  # the latest time seen in this pass
    for frame in frames:
        if frame.time is None:
            if path not in _UNTIMED_FILES_WARNED:
                _UNTIMED_FILES_WARNED.add(path)
                log.warning("%s: frames without presentation times; timing them by the average rate %.3f fps", path, fps)
            t = first if latest is None else latest + 1.0 / fps
        else:
            t = float(frame.time)
        latest = t if latest is None else max(latest, t)
        pending.append(frame)
        heapq.heappush(times, t)
        if len(pending) >= REORDER_WINDOW:
            yield heapq.heappop(times), pending.popleft()
    while pending:
        yield heapq.heappop(times), pending.popleft()


class _FramePicker:
    """Takes decoded frames in presentation order and keeps, for each target time, the frame on
    screen at that time (the last frame starting at or before it; the first frame for earlier
    targets). Only kept frames are converted to RGB and resized, straight into the output."""

    def __init__(self, targets: np.ndarray, sampling: FrameSampling) -> None:
        self.targets = targets
        self.sampling = sampling
        self.next_target = 0
        self.frames: np.ndarray | None = None  # [len(targets), h, w, 3], allocated at the first frame
        self.times = np.zeros(len(targets), dtype=np.float64)
        self._held: tuple[float, object] | None = None  # (time, av.VideoFrame) of the latest frame
        self._held_at: int | None = None  # output row already holding the held frame

    def _emit_held(self) -> None:
        time, frame = self._held
        row = self.next_target
        if self._held_at is not None:
            self.frames[row] = self.frames[self._held_at]
        else:
            rgb = upright(frame)
            if self.frames is None:
                size = fit_frame_size(rgb.shape[0], rgb.shape[1], self.sampling)
                self.frames = np.empty((len(self.targets), *size, 3), dtype=np.uint8)
            resize_frames(rgb[None], self.frames.shape[1:3], out=self.frames[row : row + 1])
            self._held_at = row
        self.times[row] = time
        self.next_target += 1

    def upcoming(self) -> float | None:
        """The next target time still without a frame."""
        return float(self.targets[self.next_target]) if self.next_target < len(self.targets) else None

    def offer(self, time: float, frame: object) -> bool:
        """Take the next decoded frame; returns True once every target has its frame."""
        if self._held is None:  # targets before the first frame take the first frame
            self._held = (time, frame)
        targets = self.targets
        while self.next_target < len(targets) and targets[self.next_target] < time - TIME_TOLERANCE:
            self._emit_held()
        if self.next_target >= len(targets):
            return True
        if self._held[1] is not frame:
            self._held, self._held_at = (time, frame), None
        return False

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        if self._held is None:
            raise RuntimeError("no decodable frames")
        while self.next_target < len(self.targets):
            self._emit_held()
        return self.frames, self.times


def upright(frame) -> np.ndarray:
    """A PyAV frame as RGB, turned as its display matrix says (a phone's portrait video is stored
    landscape with a rotation to apply). decord applies the same rotation itself."""
    rgb = frame.to_ndarray(format="rgb24")
    rotation = int(round(getattr(frame, "rotation", 0) or 0))  # degrees counter-clockwise, FFmpeg's sign
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


def _probe_duration(path: str, first: float) -> float:
    """Duration from the first frame (at ``first`` s) by decoding the whole stream: last resort
    for containers without a duration."""
    import av

    last, count = None, 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25.0)
        for frame in container.decode(stream):
            count += 1
            if frame.time is not None:
                last = float(frame.time) if last is None else max(last, float(frame.time))
    if count == 0:
        raise RuntimeError("no decodable frames")
    # no times at all (a raw elementary stream): the frame count at the average rate
    return count / rate if last is None else last - first + 1.0 / rate
