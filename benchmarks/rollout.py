"""Rollout throughput: the vLLM engine against the engine built on the policy's own ``generate``.

Both engines get the same requests: B questions about synthetic videos, their cached video
embeddings (encoded once, outside the timing), G samples each, the same sampling settings, the
same tiny Qwen2.5-VL weights. Reported per frame count: generated tokens per second of each engine
(median over repeats, after a warm-up request that also starts vLLM) and their ratio.

    .venv/bin/python benchmarks/rollout.py                     # 64 and 256 frames, G=8
    .venv/bin/python benchmarks/rollout.py --frames 64 --repeats 2
    .venv/bin/python benchmarks/rollout.py --compiled          # vLLM with torch.compile (slow first start)

The policy engine runs first: vLLM's CPU backend pins the process's threads once it starts.
Results go to benchmarks/results/rollout.json (and are printed as a table).
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

import torch  # noqa: E402

from lightning_longrl.data.collate import VideoQACollator  # noqa: E402
from lightning_longrl.data.dataset import VideoQADataset  # noqa: E402
from lightning_longrl.data.video import FrameSampling  # noqa: E402
from lightning_longrl.models.video_lm import VideoLanguageModel  # noqa: E402
from lightning_longrl.parallel.weights import full_weights  # noqa: E402
from lightning_longrl.rl.rollout import PolicyRolloutEngine, RolloutRequest, SamplingConfig  # noqa: E402
from lightning_longrl.rl.vllm_engine import VLLMRolloutEngine  # noqa: E402
from lightning_longrl.synth.dataset import SynthConfig, generate_dataset  # noqa: E402
from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent


def requests(model: VideoLanguageModel, data_dir: Path, frames: int, args) -> RolloutRequest:
    multiple = model.frame_size_multiple
    dataset = VideoQADataset(str(data_dir / "train.jsonl"), FrameSampling(num_frames=frames, max_pixels=args.pixels,
                                                                          size_multiple=multiple))
    batch = VideoQACollator(model.processor, mode="prompt")([dataset[i] for i in range(args.batch)])
    with torch.no_grad():
        video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    return RolloutRequest(batch.input_ids, batch.attention_mask, video.split(model.spatial_merge_size), args.group)


def measure(engine, request: RolloutRequest, sampling: SamplingConfig, repeats: int) -> dict:
    engine.generate(request, sampling, torch.Generator().manual_seed(0))  # warm-up (starts vLLM)
    seconds, tokens = [], []
    for r in range(repeats):
        began = time.perf_counter()
        out = engine.generate(request, sampling, torch.Generator().manual_seed(r + 1))
        seconds.append(time.perf_counter() - began)
        tokens.append(int(out.mask.sum()))
    rates = [t / s for t, s in zip(tokens, seconds)]
    return {"tokens_per_second": statistics.median(rates), "seconds": statistics.median(seconds),
            "tokens": statistics.median(tokens)}


def main() -> None:
    import logging

    logging.getLogger("lightning_longrl").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--group", type=int, default=8, help="G, samples per question")
    parser.add_argument("--batch", type=int, default=4, help="questions per request")
    parser.add_argument("--response-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pixels", type=int, default=112 * 112, help="pixels per frame")
    parser.add_argument("--compiled", action="store_true", help="run vLLM compiled instead of eagerly (the CPU default)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "rollout")
    parser.add_argument("--out", type=Path, default=None, help="default: results/rollout[_compiled].json")
    args = parser.parse_args()
    args.out = args.out or ROOT / "results" / ("rollout_compiled.json" if args.compiled else "rollout.json")

    checkpoint = create_tiny_checkpoint(args.workdir / "tiny-qwen2_5_vl", TinyModelSpec(arch="qwen2_5_vl"))
    data_dir = args.workdir / "videos"
    generate_dataset(SynthConfig(out_dir=str(data_dir), num_videos=max(8, args.batch + 4), duration=max(args.frames) / 8.0,
                                 fps=8.0, height=112, width=112, workers=0), progress=False)
    model = VideoLanguageModel.from_pretrained(checkpoint).eval()
    sampling = SamplingConfig(num_samples=args.group, max_new_tokens=args.response_tokens, temperature=1.0)
    reqs = {frames: requests(model, data_dir, frames, args) for frames in args.frames}
    rows = []
    policy = PolicyRolloutEngine(model)
    for frames, request in reqs.items():
        row = {"frames": frames, "prompt_tokens": int(request.attention_mask.sum(-1).max()),
               "policy": measure(policy, request, sampling, args.repeats)}
        print(f"{frames:4d} frames, policy engine: {row['policy']['tokens_per_second']:.0f} tokens/s", flush=True)
        rows.append(row)
    vllm = VLLMRolloutEngine(model, enforce_eager=not args.compiled)
    vllm.weights_provider = lambda: full_weights(model.hf)
    # build once for the longest prompt, so no request triggers a rebuild inside the timing
    vllm.generate(reqs[max(reqs)], sampling, torch.Generator().manual_seed(0))
    for row in rows:
        row["vllm"] = measure(vllm, reqs[row["frames"]], sampling, args.repeats)
        row["speedup"] = row["vllm"]["tokens_per_second"] / row["policy"]["tokens_per_second"]
        print(f"{row['frames']:4d} frames, vLLM engine:   {row['vllm']['tokens_per_second']:.0f} tokens/s "
              f"({row['speedup']:.1f}x)", flush=True)
    result = {
        "command": "python benchmarks/rollout.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "settings": {"group": args.group, "batch": args.batch, "response_tokens": args.response_tokens,
                     "pixels_per_frame": args.pixels, "repeats": args.repeats, "model": "tiny qwen2_5_vl (random init)",
                     "vllm_compiled": args.compiled},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| frames | prompt tokens | policy engine tokens/s | vLLM engine tokens/s | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['frames']} | {r['prompt_tokens']} | {r['policy']['tokens_per_second']:.0f} | "
              f"{r['vllm']['tokens_per_second']:.0f} | {r['speedup']:.1f}x |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
