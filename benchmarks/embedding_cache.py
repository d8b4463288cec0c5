"""GRPO step time and vision-encoder work with and without reuse of the video's computation.

For each frame count, the same GRPO configuration (tiny Qwen2.5-VL, G=8, CPU) trains a few steps
in three settings:

* ``none``: the embedding cache off and no shared prefill - every rollout and every pass
  re-encodes its video and prefills it once per response, as RL frameworks without reuse do;
* ``cache``: each video encoded once per step, still one prefill per response in the scoring passes;
* ``cache+prefill``: each video encoded once, and one prefill per question shared by its G
  responses (rollouts always share it when the cache is on).

Reported per setting: median step time, time per phase, vision-encoder calls and encoded videos
per step, and the ratio of the ``none`` step time to each setting's.

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
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lightning_longrl import GRPOModule  # noqa: E402
from lightning_longrl.datamodules import LongVideoDataModule  # noqa: E402
from lightning_longrl.models.config import ModelConfig  # noqa: E402
from lightning_longrl.rl.embedding_cache import EmbeddingCacheConfig  # noqa: E402
from lightning_longrl.rl.rollout import SamplingConfig  # noqa: E402
from lightning_longrl.stages.grpo import UpdateConfig  # noqa: E402
from lightning_longrl.synth.dataset import SynthConfig, generate_dataset  # noqa: E402
from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent
PHASES = ("encode", "rollout", "reward", "old_policy", "reference", "update")


class StepRecorder(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})


SETTINGS = {"none": (False, False), "cache": (True, False), "cache+prefill": (True, True)}


def run(checkpoint: Path, data_dir: Path, frames: int, setting: str, args) -> dict:
    L.seed_everything(0, verbose=False)
    recorder = StepRecorder()
    cache, shared = SETTINGS[setting]
    module = GRPOModule(
        ModelConfig(path=str(checkpoint)),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4),
        sampling=SamplingConfig(num_samples=args.group, max_new_tokens=args.response_tokens),
        embedding_cache=EmbeddingCacheConfig(enabled=cache),
        update=UpdateConfig(shared_prefill=shared),
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
        "frames": frames, "setting": setting, "steps": len(steps),
        "step_seconds": med["time/step"], "encoder_calls": med["vision/encoder_calls"],
        "encoded_videos": med["vision/encoded_videos"],
        "phase_seconds": {p: med.get(f"time/{p}", 0.0) for p in PHASES},
        "response_tokens_mean": statistics.mean(s["response/length_mean"] for s in steps),
    }


def main() -> None:
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
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
        for setting in SETTINGS:
            began = time.perf_counter()
            row = run(checkpoint, data_dir, frames, setting, args)
            print(f"{frames:4d} frames, {setting:13s}: {row['step_seconds']:.2f} s/step, "
                  f"{row['encoded_videos']:.0f} videos encoded/step ({time.perf_counter() - began:.0f} s)", flush=True)
            rows.append(row)
    ratios = {}
    for frames in args.frames:
        base = next(r for r in rows if r["frames"] == frames and r["setting"] == "none")
        ratios[str(frames)] = {
            r["setting"]: {"step_time_ratio": base["step_seconds"] / r["step_seconds"],
                           "encoded_videos_ratio": base["encoded_videos"] / max(r["encoded_videos"], 1)}
            for r in rows if r["frames"] == frames and r["setting"] != "none"
        }
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
    print("\n| frames | setting | s/step | videos encoded/step | encode s | rollout s | old+ref s | update s | speed-up |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p = r["phase_seconds"]
        ratio = ratios[str(r["frames"])].get(r["setting"], {}).get("step_time_ratio", 1.0)
        print(f"| {r['frames']} | {r['setting']} | {r['step_seconds']:.2f} | {r['encoded_videos']:.0f} | "
              f"{p['encode']:.2f} | {p['rollout']:.2f} | {p['old_policy'] + p['reference']:.2f} | {p['update']:.2f} | "
              f"{ratio:.2f}x |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
