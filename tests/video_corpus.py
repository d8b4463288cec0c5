"""Difficult video files, written by the test suite itself with PyAV (no downloads).

Every frame that can carry it shows its own index: frame ``i`` lights block ``i`` of a 12 x 8 grid
of 14 x 14 pixel blocks (168 x 112 pixels, two multiples of 28, so the readers do not resize), which
survives any codec. :func:`frame_index` reads it back, so a test can check that the frame a reader
returns is the one on screen at the time it reports.

Each :class:`Case` says what a reader must do with its file: return frames whose content matches
their times (``times[i]`` is the presentation time of frame ``i``, from the file's first frame), or
refuse it with a :class:`~lightning_longrl.data.video.VideoDecodeError` whose message contains
``skip``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

W, H, BLOCK = 168, 112, 14
IDS = (W // BLOCK) * (H // BLOCK)  # 96 distinct frames


def frame_image(i: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """RGB frame ``i``: block ``i % 96`` white on black (at other sizes, a flat grey of level 2i)."""
    w, h = size
    if (w, h) != (W, H):
        return np.full((h, w, 3), (2 * i) % 256, np.uint8)
    img = np.zeros((H, W, 3), np.uint8)
    row, col = divmod(i % IDS, W // BLOCK)
    img[row * BLOCK:(row + 1) * BLOCK, col * BLOCK:(col + 1) * BLOCK] = 255
    return img


def frame_index(rgb: np.ndarray) -> int:
    """The index :func:`frame_image` drew into ``rgb`` (a 168 x 112 frame)."""
    blocks = rgb.astype(np.float32).mean(-1).reshape(H // BLOCK, BLOCK, W // BLOCK, BLOCK).mean((1, 3))
    return int(blocks.argmax())


def write(path: Path, codec: str = "libx264", n: int = 48, rate: int = 24, pts: list[int] | None = None,
          time_base: Fraction | None = None, container_format: str | None = None, pix_fmt: str = "yuv420p",
          size: tuple[int, int] = (W, H), b_frames: int | None = None, options: dict | None = None) -> Path:
    """Encode frames 0..n-1 (``pts`` in ``time_base`` units when given, else one per 1/rate)."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        stream.codec_context.gop_size = 12
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frame_image(i, size), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            else:
                frame.pts = i
            container.mux(stream.encode(frame.reformat(format=pix_fmt)))
        container.mux(stream.encode())
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def no_frames(path: Path) -> Path:
    """A container with a video stream and not one packet."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # header and trailer, no packets
    return path


def rotated(path: Path, source: Path, degrees: int) -> Path:
    """``source`` (an MP4) with a display matrix that turns it ``degrees`` clockwise, as phones
    record portrait video: the track header's matrix is rewritten, the frames are untouched."""
    data = bytearray(source.read_bytes())
    at = data.find(b"tkhd")  # box type; then version (1 byte), flags (3), times, layer, volume, matrix
    version = data[at + 4]
    matrix = at + 8 + (32 if version == 1 else 20) + 8 + 8
    one = 1 << 16  # 16.16 fixed point
    a, b, c, d = {90: (0, one, -one, 0), 180: (-one, 0, 0, -one), 270: (0, -one, one, 0)}[degrees]
    struct.pack_into(">9i", data, matrix, a, b, 0, c, d, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


def cut(path: Path, source: Path, keep: float) -> Path:
    """The first ``keep`` of ``source``'s bytes, as a download stopped midway leaves it."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], Path]  # writes the file into a folder, returns its path
    times: Callable[[int], float] | None  # presentation time of frame i (None: not an indexed file)
    skip: str | None = None  # expected: the readers refuse the file with this in the message
    decord_wrong: bool = False  # decord's own random access returns wrong frames on it (routed to PyAV)
    rotation: int = 0  # the display matrix turns the frames this many degrees clockwise (readers must too)

    def index(self, rgb: np.ndarray) -> int:
        """:func:`frame_index` of a frame a reader returned (turned back from the display rotation)."""
        return frame_index(np.rot90(rgb, k=self.rotation // 90))


def _vfr_pts() -> list[int]:
    gaps = [40 if i % 3 else 120 for i in range(47)]  # ms: two frames at 25 fps, then one of 1/8 s
    return [0, *np.cumsum(gaps).tolist()]


VFR = _vfr_pts()

CASES = [
    Case("h264_b_frames.mp4", lambda d: write(d / "h264_b_frames.mp4"), lambda i: i / 24),
    Case("h264_b_frames.avi", lambda d: write(d / "h264_b_frames.avi"), lambda i: i / 24, decord_wrong=True),
    Case("mpeg4_b_frames.avi", lambda d: write(d / "mpeg4_b_frames.avi", "mpeg4", b_frames=2), lambda i: i / 24,
         decord_wrong=True),
    Case("mpeg4_b_frames.mp4", lambda d: write(d / "mpeg4_b_frames.mp4", "mpeg4", b_frames=2), lambda i: i / 24,
         decord_wrong=True),
    Case("mpeg4_b_frames.mkv", lambda d: write(d / "mpeg4_b_frames.mkv", "mpeg4", b_frames=2), lambda i: i / 24,
         decord_wrong=True),
    Case("hevc_b_frames.mkv", lambda d: write(d / "hevc_b_frames.mkv", "libx265", options={"x265-params": "log-level=none"}),
         lambda i: i / 24, decord_wrong=True),
    Case("vp9.webm", lambda d: write(d / "vp9.webm", "libvpx-vp9"), lambda i: i / 24),
    Case("no_pts.h264", lambda d: write(d / "no_pts.h264", container_format="h264"), lambda i: i / 25),  # raw stream: 25 fps assumed
    Case("starts_at_2s.mp4", lambda d: write(d / "starts_at_2s.mp4", pts=[2000 + 1000 * i // 24 for i in range(48)],
                                             time_base=Fraction(1, 1000)), lambda i: (1000 * i // 24) / 1000),
    Case("variable_rate.mkv", lambda d: write(d / "variable_rate.mkv", pts=VFR, time_base=Fraction(1, 1000)),
         lambda i: VFR[i] / 1000),
    Case("10bit.mp4", lambda d: write(d / "10bit.mp4", pix_fmt="yuv420p10le"), lambda i: i / 24),
    Case("yuv444.mp4", lambda d: write(d / "yuv444.mp4", pix_fmt="yuv444p"), lambda i: i / 24),
    Case("odd_size_99x61.mp4", lambda d: write(d / "odd_size_99x61.mp4", pix_fmt="yuv444p", size=(99, 61)), None),
    Case("tall_30x600.mp4", lambda d: write(d / "tall_30x600.mp4", size=(30, 600), n=12), None),
    Case("one_frame.mp4", lambda d: write(d / "one_frame.mp4", n=1), lambda i: 0.0),
    Case("long_low_rate.mkv", lambda d: write(d / "long_low_rate.mkv", "mpeg4", n=600, rate=1, size=(56, 56)), None),
    Case("no_frames.mp4", lambda d: no_frames(d / "no_frames.mp4"), None, skip="cannot decode"),
    Case("audio_only.m4a", lambda d: audio_only(d / "audio_only.m4a"), None, skip="cannot decode"),
    Case("cut_before_index.mp4", lambda d: cut(d / "cut_before_index.mp4", write(d / "full.mp4", n=96), 0.5), None,
         skip="cannot decode"),
    Case("rotated_90.mp4", lambda d: rotated(d / "rotated_90.mp4", write(d / "upright_a.mp4"), 90), lambda i: i / 24,
         rotation=90),
    Case("rotated_270.mp4", lambda d: rotated(d / "rotated_270.mp4", write(d / "upright_b.mp4"), 270), lambda i: i / 24,
         rotation=270),
    Case("cut_midway.mkv", lambda d: cut(d / "cut_midway.mkv", write(d / "full.mkv", n=96), 0.5), lambda i: i / 24),
]
"""The corpus; ``cut_midway.mkv``'s header still promises all 96 frames (a header that lies about
the length): frames past the cut take the last readable one."""
