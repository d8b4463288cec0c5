"""Draw a :class:`~lightning_longrl.synth.scenes.Scene` frame by frame and encode it with PyAV."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from lightning_longrl.synth.scenes import Scene, Sprite


class FrameRenderer:
    """Rasterises scenes at a fixed frame size; circle masks are cached per diameter."""

    def __init__(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"frame height and width must be even for yuv420p, got {height}x{width}")
        self.height, self.width = height, width
        self._circles: dict[int, np.ndarray] = {}

    def _circle(self, diameter: int) -> np.ndarray:
        if diameter not in self._circles:
            r = diameter / 2
            yy, xx = np.mgrid[:diameter, :diameter] + 0.5
            self._circles[diameter] = (yy - r) ** 2 + (xx - r) ** 2 <= r * r
        return self._circles[diameter]

    def _draw(self, frame: np.ndarray, sprite: Sprite, t: float) -> None:
        side = max(2, round(sprite.size * min(self.height, self.width)))
        cx, cy = sprite.position(t)
        top, left = round(cy * self.height - side / 2), round(cx * self.width - side / 2)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + side, self.height), min(left + side, self.width)
        if y1 <= y0 or x1 <= x0:
            return
        region = frame[y0:y1, x0:x1]
        if sprite.shape == "square":
            region[...] = sprite.color
        else:
            mask = self._circle(side)[y0 - top : y1 - top, x0 - left : x1 - left]
            region[mask] = sprite.color

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
                self._draw(frame, sprite, t)
        return frame

    def frames(self, scene: Scene, fps: float) -> Iterator[np.ndarray]:
        for i in range(int(round(scene.duration * fps))):
            yield self.frame(scene, i / fps)


def encode_video(path: str | Path, frames: Iterator[np.ndarray], fps: float, codec: str = "libx264") -> None:
    """Encode RGB frames to ``path``; written to a temporary name first, so a crash leaves no partial file."""
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.gop_size = max(1, int(round(fps * 2)))  # a keyframe every 2 s keeps seeking cheap
            if codec == "libx264":
                stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
            for i, rgb in enumerate(frames):
                if i == 0:
                    stream.height, stream.width = rgb.shape[:2]
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
