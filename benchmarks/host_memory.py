"""Host memory of long videos: peak resident memory per process for `lightning-longrl eval` and
one GRPO step at 1,024 / 4,096 / 8,192 frames, with DataLoader workers.

Writes one long video (default 2,048 s at 4 fps, 8,192 frames of 224x224, MPEG-4) and a few
multiple-choice records on it, builds the tiny random Qwen2.5-VL, then runs the two commands as a
user would, each in its own process tree, while a sampler reads every process's RSS every 100 ms
(psutil): the main process, each DataLoader worker, and their sum at any one moment. The frames
are decoded at 224x224 and resized to the pixel budget (``--max-pixels``, default 56x56: 4
visual tokens per frame pair, so 8,192 frames are 16,384 video tokens, which the tiny model still
prefills in seconds on CPU). Per process the peak is of RSS; the sum is of PSS (proportional set
size: pages shared by the main process and its forked workers counted once in all).

    .venv/bin/python benchmarks/host_memory.py                          # -> benchmarks/results/host_memory.json
    .venv/bin/python benchmarks/host_memory.py --frames 1024 --workers 2

The raw frames alone are ``frames x 224 x 224 x 3`` bytes (1.2 GB at 8,192): the figures show
whether a process holds them all at once, and how many processes do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_long_video(path: Path, frames: int, fps: int, side: int) -> None:
    """Moving bars over a slowly changing background: every frame differs (no decoder shortcut)."""
    import av
    import numpy as np

    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 400_000
        y = np.arange(side)[:, None]
        for i in range(frames):
            frame = np.empty((side, side, 3), dtype=np.uint8)
            frame[..., 0] = (i * 3) % 256
            frame[..., 1] = ((y + i) % side * 255 // side).astype(np.uint8)
            frame[..., 2] = 128
            frame[:, (i * 7) % side: (i * 7) % side + side // 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)


def write_records(path: Path, video: Path, count: int) -> None:
    rows = [{"id": f"q{i}", "video": str(video), "question": f"Which bar colour comes first? ({i})",
             "options": ["red", "green", "blue", "white"], "answer": "D",
             "reasoning": "the bars are white.", "category": "Temporal"} for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


class TreeSampler:
    """Peak RSS of a process and of each descendant, and the peak PSS sum of them all, sampled
every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peaks: dict[int, dict] = {}
        self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for proc in procs:
                try:
                    info = proc.memory_full_info()  # rss and pss (reads smaps)
                    rss = info.rss
                    name = " ".join(proc.cmdline()[:3])[-80:]
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += info.pss
                entry = self.peaks.setdefault(proc.pid, {"pid": proc.pid, "parent": proc.ppid(), "cmd": name, "peak": 0})
                entry["peak"] = max(entry["peak"], rss)
            self.total_peak = max(self.total_peak, total)
            time.sleep(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        main = self.peaks.get(self.root.pid, {"peak": 0})["peak"]
        others = [p for pid, p in self.peaks.items() if pid != self.root.pid]
        return {"main_gib": main / 2**30, "largest_other_gib": max((p["peak"] for p in others), default=0) / 2**30,
                "other_processes": len(others), "sum_pss_gib": self.total_peak / 2**30}


def measure(name: str, cmd: list[str], log: Path) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    began = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        sampler = TreeSampler(proc.pid)
        code = proc.wait()
    row = {"run": name, **sampler.stop(), "seconds": round(time.perf_counter() - began, 1), "exit_code": code}
    if code:
        row["error"] = log.read_text().strip().splitlines()[-1][:300]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of both commands")
    parser.add_argument("--side", type=int, default=224, help="the video's frame size in pixels")
    parser.add_argument("--max-pixels", type=int, default=56 * 56, help="pixel budget per frame after resizing")
    parser.add_argument("--fps", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / ".cache" / "host_memory")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "host_memory.json")
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("lightning-longrl"))
    work = args.workdir
    longest = max(args.frames)
    video = work / f"long-{longest}f-{args.side}px.mp4"
    print(f"writing {video} ({longest} frames of {args.side}x{args.side})", flush=True)
    write_long_video(video, longest, args.fps, args.side)
    records = work / "records.jsonl"
    write_records(records, video, 4)
    model = work / "tiny"
    if not (model / "config.json").is_file():
        subprocess.run([cli, "tiny-model", "--config", str(REPO / "configs/demo/tiny_model.yaml"), "--out", str(model)],
                       check=True, cwd=REPO, capture_output=True)
    rows = []
    for frames in args.frames:
        common_eval = ["--data", str(records), "--model", str(model), "--num_frames", str(frames), "--max_pixels",
                       str(args.max_pixels), "--max_new_tokens", "4", "--batch_size", "1", "--num_workers", str(args.workers),
                       "--limit", "2", "--output_dir", str(work / f"eval-{frames}")]
        subprocess.run(["rm", "-rf", str(work / f"eval-{frames}")], check=False)
        rows.append({"frames": frames, **measure("eval", [cli, "eval", *common_eval], work / f"eval-{frames}.log")})
        print(json.dumps(rows[-1]), flush=True)
        grpo = [cli, "fit", "--config", str(REPO / "configs/demo/grpo.yaml"), "--model.init_args.model.path", str(model),
                "--data.init_args.train_file", str(records), "--data.init_args.val_file", str(records),
                "--data.init_args.num_frames", str(frames), "--data.init_args.max_pixels", str(args.max_pixels),
                "--data.init_args.batch_size", "1", "--data.init_args.num_workers", str(args.workers),
                "--data.init_args.frame_cache_mb", "0",
                "--model.init_args.sampling.num_samples", "2", "--model.init_args.sampling.max_new_tokens", "4",
                "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.default_root_dir",
                str(work / f"grpo-{frames}"), "--trainer.logger.init_args.save_dir", str(work / f"grpo-{frames}")]
        rows.append({"frames": frames, **measure("grpo_step", grpo, work / f"grpo-{frames}.log")})
        print(json.dumps(rows[-1]), flush=True)
    result = {"command": "python benchmarks/host_memory.py " + " ".join(sys.argv[1:]),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
              "video": {"frames": longest, "side": args.side, "fps": args.fps}, "max_pixels": args.max_pixels,
              "workers": args.workers, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| frames | run | main GiB (RSS) | largest other process GiB (RSS) | processes besides main | all GiB (PSS) | s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["exit_code"]:
            print(f"| {r['frames']} | {r['run']} | failed: {r.get('error', '')} |")
            continue
        print(f"| {r['frames']} | {r['run']} | {r['main_gib']:.2f} | {r['largest_other_gib']:.2f} | {r['other_processes']} "
              f"| {r['sum_pss_gib']:.2f} | {r['seconds']} |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
