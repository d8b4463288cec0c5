"""GRPO step time and vision-encoder work with the video-embedding cache on and off.

For each frame count, the same GRPO configuration (tiny Qwen2.5-VL, G=8, CPU) trains a few steps
with the cache on and a few with it off (every rollout and every pass re-encoding its video, as RL
frameworks without the cache do). Reported per setting: median step time, time per phase, vision
encoder calls and encoded videos per step, and the off/on ratio of step time.

    .venv/bin/python benchmarks/embedding_cache.py                       # 64, 256, 512 frames
    .venv/bin/python benchmarks/embedding_cache.py --frames 256 --steps 3

Results go to benchmarks/results/embedding_cache.json (and are printed as a table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lightning_longrl import GRPOModule  # noqa: E402
from lightning_longrl.datamodules import LongVideoDataModule  # noqa: E402
from lightning_longrl.models.config import ModelConfig  # noqa: E402
from lightning_longrl.models.tiny import TinyModelSpec, create_tiny_checkpoint  # noqa: E402
from lightning_longrl.rl.embedding_cache import EmbeddingCacheConfig  # noqa: E402
from lightning_longrl.rl.rollout import SamplingConfig  # noqa: E402
from lightning_longrl.synth.dataset import SynthConfig, generate_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parent
PHASES = ("encode", "rollout", "reward", "old_policy", "reference", "update")


class StepRecorder(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def run(checkpoint: Path, data_dir: Path, frames: int, cache: bool, args) -> dict:
    L.seed_everything(0, verbose=False)
    recorder = StepRecorder()
    module = GRPOModule(
        ModelConfig(path=str(checkpoint)),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4),
        sampling=SamplingConfig(num_samples=args.group, max_new_tokens=args.response_tokens),
        embedding_cache=EmbeddingCacheConfig(enabled=cache),
    )
    data = LongVideoDataModule(
        train_file=str(data_dir / "train.jsonl"), num_frames=frames, max_pixels=args.pixels,
        batch_size=args.batch, num_workers=1,
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps + 1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[recorder],
    )
    trainer.fit(module, data)
    steps = recorder.steps[1:]  # the first step warms up allocators and caches
    med = {k: statistics.median(s[k] for s in steps) for k in steps[0] if k.startswith(("time/", "vision/"))}
    return {
        "frames": frames, "cache": cache, "steps": len(steps),
        "step_seconds": med["time/step"], "encoder_calls": med["vision/encoder_calls"],
        "encoded_videos": med["vision/encoded_videos"],
        "phase_seconds": {p: med.get(f"time/{p}", 0.0) for p in PHASES},
        "response_tokens_mean": statistics.mean(s["response/length_mean"] for s in steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--steps", type=int, default=3, help="measured steps per setting (after one warm-up step)")
    parser.add_argument("--group", type=int, default=8, help="G, responses per question")
    parser.add_argument("--batch", type=int, default=2, help="questions per step")
    parser.add_argument("--response-tokens", type=int, default=64)
    parser.add_argument("--pixels", type=int, default=112 * 112, help="pixels per frame")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "embedding_cache")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "embedding_cache.json")
    args = parser.parse_args()

    checkpoint = create_tiny_checkpoint(args.workdir / "tiny-qwen2_5_vl", TinyModelSpec(arch="qwen2_5_vl"))
    data_dir = args.workdir / "videos"
    longest = max(args.frames)
    generate_dataset(SynthConfig(out_dir=str(data_dir), num_videos=12, duration=longest / 8.0, fps=8.0,
                                 height=112, width=112, workers=0), progress=False)
    rows = []
    for frames in args.frames:
        for cache in (True, False):
            began = time.perf_counter()
            row = run(checkpoint, data_dir, frames, cache, args)
            print(f"{frames:4d} frames, cache {'on ' if cache else 'off'}: {row['step_seconds']:.2f} s/step, "
                  f"{row['encoded_videos']:.0f} videos encoded/step ({time.perf_counter() - began:.0f} s)", flush=True)
            rows.append(row)
    ratios = {}
    for frames in args.frames:
        on = next(r for r in rows if r["frames"] == frames and r["cache"])
        off = next(r for r in rows if r["frames"] == frames and not r["cache"])
        ratios[str(frames)] = {"step_time_ratio": off["step_seconds"] / on["step_seconds"],
                               "encode_ratio": off["encoded_videos"] / max(on["encoded_videos"], 1)}
    result = {
        "command": "python benchmarks/embedding_cache.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
        "settings": {"group": args.group, "batch": args.batch, "response_tokens": args.response_tokens,
                     "pixels_per_frame": args.pixels, "model": "tiny qwen2_5_vl (random init)"},
        "rows": rows, "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| frames | cache | s/step | encoded videos/step | encode s | rollout s | old+ref s | update s | off/on |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["phase_seconds"]
        ratio = f"{ratios[str(r['frames'])]['step_time_ratio']:.2f}x" if not r["cache"] else ""
        print(f"| {r['frames']} | {'on' if r['cache'] else 'off'} | {r['step_seconds']:.2f} | {r['encoded_videos']:.0f} | "
              f"{p['encode']:.2f} | {p['rollout']:.2f} | {p['old_policy'] + p['reference']:.2f} | {p['update']:.2f} | {ratio} |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
