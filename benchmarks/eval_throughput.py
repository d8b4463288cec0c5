"""Evaluation throughput: questions per second of ``lightning-longrl eval`` for each engine.

The whole evaluation path is timed (:func:`lightning_longrl.eval.runner.evaluate`): decoding the
frames of each video (DataLoader workers), the vision tower, greedy generation, scoring and
writing the predictions file. Synthetic long videos, the tiny random Qwen2.5-VL, N questions per
frame count after a warm-up run (which also starts vLLM). A random model rarely stops early, so
every response runs to ``--response-tokens``.

    .venv/bin/python benchmarks/eval_throughput.py                    # 64 and 256 frames, both engines
    .venv/bin/python benchmarks/eval_throughput.py --frames 64 --questions 8

The policy engine runs first: vLLM's CPU backend pins the process's threads once it starts.
Results go to benchmarks/results/eval_throughput.json (and are printed as a table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from lightning_longrl.eval.runner import EvalConfig, evaluate  # noqa: E402
from lightning_longrl.models.config import ModelConfig, load_model  # noqa: E402
from lightning_longrl.rl.rollout import PolicyRolloutEngine  # noqa: E402
from lightning_longrl.rl.vllm_engine import VLLMRolloutEngine  # noqa: E402

ENGINES = {"policy": PolicyRolloutEngine, "vllm": VLLMRolloutEngine}  # this script's --engines names
from lightning_longrl.synth.dataset import SynthConfig, generate_dataset  # noqa: E402
from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent


def run(engine, model, checkpoint: Path, data: Path, frames: int, questions: int, out: Path, args) -> dict:
    config = EvalConfig(model=str(checkpoint), data=str(data), output_dir=str(out), num_frames=frames,
                        max_pixels=args.pixels, max_new_tokens=args.response_tokens, batch_size=args.batch_size,
                        num_workers=args.workers, limit=questions, progress=False)
    shutil.rmtree(out, ignore_errors=True)
    result = evaluate(config, model, engine)
    return {"questions": result.answered_now, "seconds": result.seconds,
            "questions_per_second": result.answered_now / result.seconds}


def main() -> None:
    import logging

    logging.getLogger("lightning_longrl").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--engines", nargs="+", default=["policy", "vllm"])
    parser.add_argument("--questions", type=int, default=16, help="questions timed per frame count")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding videos")
    parser.add_argument("--response-tokens", type=int, default=128)
    parser.add_argument("--pixels", type=int, default=112 * 112, help="pixels per frame")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "eval_throughput")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "eval_throughput.json")
    args = parser.parse_args()

    checkpoint = create_tiny_checkpoint(args.workdir / "tiny-qwen2_5_vl", TinyModelSpec(arch="qwen2_5_vl"))
    data_dir = args.workdir / "videos"
    generate_dataset(SynthConfig(out_dir=str(data_dir), num_videos=max(8, 2 * args.questions), duration=max(args.frames) / 8.0,
                                 fps=8.0, height=112, width=112, workers=0), progress=False)
    data = data_dir / "train.jsonl"
    model = load_model(ModelConfig(path=str(checkpoint))).eval()
    rows = {frames: {"frames": frames} for frames in args.frames}
    for name in args.engines:
        engine = ENGINES[name](model)
        # warm-up at the largest frame count (vLLM starts and sizes itself for the longest prompt)
        run(engine, model, checkpoint, data, max(args.frames), args.batch_size, args.workdir / "warmup", args)
        for frames in args.frames:
            rows[frames][name] = run(engine, model, checkpoint, data, frames, args.questions,
                                     args.workdir / f"{name}-{frames}", args)
            print(f"{frames:4d} frames, {name:6s} engine: {rows[frames][name]['questions_per_second']:.2f} questions/s",
                  flush=True)
        engine.close()
    result = {
        "command": "python benchmarks/eval_throughput.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "settings": {"questions": args.questions, "batch_size": args.batch_size, "workers": args.workers,
                     "response_tokens": args.response_tokens, "pixels_per_frame": args.pixels,
                     "model": "tiny qwen2_5_vl (random init)", "decoding": "greedy"},
        "rows": list(rows.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| frames | " + " | ".join(f"{e} engine: questions/s" for e in args.engines) + " |")
    print("|---:|" + "---:|" * len(args.engines))
    for r in rows.values():
        print(f"| {r['frames']} | " + " | ".join(f"{r[e]['questions_per_second']:.2f}" for e in args.engines) + " |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
