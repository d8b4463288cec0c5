"""The attention kernels models load with (lightning_longrl/models/attention.py) against
transformers' own SDPA path, on a tiny random Qwen2.5-VL (the demo's shape, or --hidden etc.).

* vision tower forward + backward at several frame counts (28x28 frames, one merged token per
  frame pair, as in the demo; ``--side 56`` for four): transformers' loop of one SDPA call per
  temporal patch against one batched call;
* sampling with a KV cache (G responses to left-padded prompts, the GRPO rollout and eval
  shape): transformers' SDPA, which copies the key/value heads to the query heads under a mask,
  against grouped-query SDPA.

Each is the median of ``--repeats`` timed runs after a warm-up, in one process; the outputs of
both paths are compared too. Usage::

    .venv/bin/python benchmarks/attention_kernels.py            # -> benchmarks/results/attention_kernels.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lightning_longrl.models import attention
from lightning_longrl.models.video_lm import LMInputs, VideoLanguageModel
from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint

ROOT = Path(__file__).resolve().parent


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def vision(model: VideoLanguageModel, frames: int, side: int, videos: int, repeats: int) -> dict:
    config = model.hf.config.vision_config
    patches = side // config.patch_size
    grid = torch.tensor([[frames // config.temporal_patch_size, patches, patches]] * videos)
    dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    pixels = torch.randn(int(grid.prod(-1).sum()), dim, generator=torch.Generator().manual_seed(0))
    out = {}
    embeds = {}
    for name, kernel in (("transformers_loop", "sdpa"), ("packed", attention.PACKED_VISION)):
        model.vision_tower.config._attn_implementation = kernel

        def step(name: str = name) -> None:
            model.zero_grad(set_to_none=True)
            e = model.encode_video(pixels, grid).embeds
            e.square().sum().backward()
            embeds[name] = e.detach()

        out[f"{name}_s"] = median_seconds(step, repeats)
    model.vision_tower.config._attn_implementation = attention.PACKED_VISION
    out["speedup"] = out["transformers_loop_s"] / out["packed_s"]
    out["max_abs_diff"] = float((embeds["packed"] - embeds["transformers_loop"]).abs().max())
    return {"frames": frames, "side": side, "videos": videos, **out}


def sampling(model: VideoLanguageModel, prompts: int, prompt_len: int, samples: int, new_tokens: int,
             repeats: int) -> dict:
    hidden = model.text_config.hidden_size
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(prompts, prompt_len, hidden, generator=g) * 0.02
    mask = torch.ones(prompts, prompt_len, dtype=torch.long)
    for i in range(prompts):  # left padding of different lengths: every call is masked
        mask[i, : (i * 7) % (prompt_len // 4)] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0).view(1, prompts, prompt_len).expand(3, -1, -1)
    inputs = LMInputs(embeds, mask, positions)
    out, tokens = {}, {}
    for name, kernel in (("transformers_sdpa", "sdpa"), ("gqa_sdpa", attention.GQA_SDPA)):
        model.language_model.config._attn_implementation = kernel

        def run(name: str = name) -> None:
            gen = model.generate(inputs, max_new_tokens=new_tokens, num_samples=samples,
                                 generator=torch.Generator().manual_seed(1))
            tokens[name] = gen.tokens

        out[f"{name}_s"] = median_seconds(run, repeats)
    model.language_model.config._attn_implementation = attention.GQA_SDPA
    out["speedup"] = out["transformers_sdpa_s"] / out["gqa_sdpa_s"]
    out["same_tokens"] = bool(torch.equal(tokens["gqa_sdpa"], tokens["transformers_sdpa"]))
    return {"prompts": prompts, "prompt_len": prompt_len, "samples": samples, "new_tokens": new_tokens, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--side", type=int, default=28)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "attention_kernels.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        spec = TinyModelSpec(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.hidden // 32,
                             num_kv_heads=max(1, args.hidden // 64), intermediate_size=3 * args.hidden)
        model = VideoLanguageModel.from_pretrained(create_tiny_checkpoint(Path(tmp) / "m", spec)).train()
    rows = {"vision": [], "sampling": []}
    for frames in args.frames:
        row = vision(model, frames, args.side, args.videos, args.repeats)
        rows["vision"].append(row)
        print(f"vision fwd+bwd, {args.videos} videos x {frames} frames: loop {row['transformers_loop_s']:.3f} s, "
              f"packed {row['packed_s']:.3f} s ({row['speedup']:.2f}x), max diff {row['max_abs_diff']:.1e}", flush=True)
    model.eval()
    for prompts, length in ((8, 160), (8, 600)):
        row = sampling(model, prompts, length, samples=8, new_tokens=48, repeats=args.repeats)
        rows["sampling"].append(row)
        print(f"sampling {prompts} prompts x 8 of {length} tokens, 48 new: transformers {row['transformers_sdpa_s']:.3f} s, "
              f"gqa {row['gqa_sdpa_s']:.3f} s ({row['speedup']:.2f}x), same tokens {row['same_tokens']}", flush=True)
    result = {"command": "python benchmarks/attention_kernels.py", "torch_threads": torch.get_num_threads(),
              "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.hidden // 32,
                        "kv_heads": max(1, args.hidden // 64)}, **rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
