"""Frame-sampling speed and peak memory of the video reader on a long video.

Writes a synthetic long video once (default 10 minutes, 640x360, 24 fps = 14,400 frames, a
keyframe every 2 s as in typical web video), then
for each requested frame count measures, each in a fresh process, the wall time and the peak
resident memory of ``read_video`` with decord and with the PyAV fallback, and the effect of
chunked decoding on peak memory.

    .venv/bin/python benchmarks/video_decode.py --out benchmarks/results/video_decode.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_long_video(path: Path, minutes: float, width: int, height: int, fps: int, gop_seconds: float) -> None:
    import av
    import torch
    import torch.nn.functional as F

    frames = int(minutes * 60 * fps)
    # low-frequency texture panning across the frame: compresses like ordinary footage
    coarse = torch.rand(1, 3, height // 16, width // 8, generator=torch.Generator().manual_seed(0)) * 255
    base = F.interpolate(coarse, size=(height, 2 * width), mode="bicubic").clamp(0, 255)
    base = base[0].permute(1, 2, 0).to(torch.uint8).numpy()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        stream.gop_size = int(gop_seconds * fps)
        for i in range(frames):
            offset = (i * 2) % width
            frame = np.ascontiguousarray(base[:, offset : offset + width])
            frame[:40, :200] = (i * 7) % 255  # a changing patch, so every frame differs
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def measure(video: str, num_frames: int, backend: str, max_pixels: int, chunk_bytes: int) -> dict:
    """Runs in a child process so that ru_maxrss is this measurement's own peak."""
    from lightning_longrl.data import video as video_io
    from lightning_longrl.data.video import FrameSampling

    sampling = FrameSampling(num_frames=num_frames, max_pixels=max_pixels, chunk_bytes=chunk_bytes)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    reader = video_io._read_with_decord if backend == "decord" else video_io._read_with_pyav
    clip = reader(video, sampling, None, None, 1)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "backend": backend, "num_frames": num_frames, "seconds": round(seconds, 3),
        "frames_per_s": round(num_frames / seconds, 1), "output_mb": round(clip.frames.nbytes / 2**20, 1),
        "peak_rss_mb": round(peak / 1024, 1), "rss_growth_mb": round((peak - before) / 1024, 1),
        "chunk_mb": round(chunk_bytes / 2**20, 1), "frame_shape": list(clip.frames.shape[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=Path("benchmarks/results/long_video.mp4"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--gop_seconds", type=float, default=2.0)
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024, 4096, 8192])
    parser.add_argument("--max_pixels", type=int, default=224 * 224)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/video_decode.json"))
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        video, n, backend, max_pixels, chunk = args.child
        print(json.dumps(measure(video, int(n), backend, int(max_pixels), int(chunk))))
        return

    args.video.parent.mkdir(parents=True, exist_ok=True)
    if not args.video.exists():
        print(f"writing {args.minutes} min test video to {args.video} ...", flush=True)
        write_long_video(args.video, args.minutes, 640, 360, args.fps, args.gop_seconds)

    def child(n: int, backend: str, chunk: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--child", str(args.video), str(n), backend, str(args.max_pixels), str(chunk)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        return row

    rows = []
    for n in args.frames:
        rows.append(child(n, "decord", 256 * 2**20))
        rows.append(child(n, "pyav", 256 * 2**20))
    # chunking: the largest request with a bounded chunk vs everything decoded in one batch
    biggest = max(args.frames)
    rows.append(child(biggest, "decord", 64 * 2**20))
    rows.append(child(biggest, "decord", 2**40))
    result = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                          "cores": __import__("os").cpu_count()},
              "video": {"path": str(args.video), "minutes": args.minutes, "size": "640x360", "fps": args.fps,
                        "gop_seconds": args.gop_seconds, "codec": "h264"},
              "max_pixels": args.max_pixels, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
