"""Draw a :class:`~lightning_longrl.synth.scenes.Scene` frame by frame and encode it with PyAV."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from lightning_longrl.synth.scenes import Scene, Sprite


class FrameRenderer:
    """Rasterises scenes at a fixed frame size."""

    def __init__(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"frame height and width must be even for yuv420p, got {height}x{width}")
        self.height, self.width = height, width

    def _draw(self, frame: np.ndarray, sprite: Sprite) -> None:
        left, top, right, bottom = sprite.box
        y0, y1 = round(top * self.height), round(bottom * self.height)
        x0, x1 = round(left * self.width), round(right * self.width)
        frame[max(y0, 0) : min(y1, self.height), max(x0, 0) : min(x1, self.width)] = sprite.color

    def frame(self, scene: Scene, t: float) -> np.ndarray:
        """The ``[H, W, 3]`` uint8 RGB frame shown at time ``t`` seconds."""
        color = scene.backgrounds[0][1]
        for start, c in scene.backgrounds:
            if start <= t:
                color = c
        frame = np.empty((self.height, self.width, 3), dtype=np.uint8)
        frame[...] = color
        for sprite in scene.sprites:
            if sprite.start <= t < sprite.end:
                self._draw(frame, sprite)
        return frame

    def frames(self, scene: Scene, fps: float) -> Iterator[np.ndarray]:
        for i in range(int(round(scene.duration * fps))):
            yield self.frame(scene, i / fps)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> the ``[H * 3 / 2, W]`` uint8 planes of yuv420p (BT.601, limited
    range, chroma averaged over 2x2 pixels), in integer arithmetic.

    The conversion is done here rather than by the encoder's scaler so that nothing between the
    frames and the codec depends on FFmpeg's build or CPU features. (Byte-identical files also
    need a deterministic codec: with libx264 about one video in 240 still came out with
    different, equally decodable, bytes between two runs; MPEG-4 part 2, the default, gave
    none in 720.)
    """
    h, w = rgb.shape[:2]
    c = rgb.astype(np.int32)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    # chroma of each 2x2 block from its mean colour
    m = c.reshape(h // 2, 2, w // 2, 2, 3).sum((1, 3))
    mr, mg, mb = m[..., 0], m[..., 1], m[..., 2]
    u = ((-38 * mr - 74 * mg + 112 * mb + 512) >> 10) + 128
    v = ((112 * mr - 94 * mg - 18 * mb + 512) >> 10) + 128
    planes = [y.reshape(-1), u.reshape(-1), v.reshape(-1)]
    return np.concatenate(planes).clip(0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def encode_video(path: str | Path, frames: Iterator[np.ndarray], fps: float, codec: str = "mpeg4") -> None:
    """Encode RGB frames to ``path``, byte-identically for identical frames; written to a
    temporary name first, so a crash leaves no partial file."""
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.gop_size = max(1, int(round(fps * 2)))  # a keyframe every 2 s keeps seeking cheap
            stream.codec_context.thread_count = 1
            if codec == "libx264":
                stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
            previous, planes = None, None
            for i, rgb in enumerate(frames):
                if i == 0:
                    stream.height, stream.width = rgb.shape[:2]
                if previous is None or not np.array_equal(rgb, previous):  # synthetic frames repeat a lot
                    previous, planes = rgb, rgb_to_yuv420p(rgb)
                frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
                frame.pts, frame.time_base = i, 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
