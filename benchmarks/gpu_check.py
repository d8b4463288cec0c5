"""The real-size path on one GPU, measured in minutes: a random-weight Qwen2.5-VL of the 7B shape.

Nothing is downloaded and no video is decoded: the model is built from its config with random
weights (bf16, SDPA or flash-attn when installed, gradient checkpointing, frozen vision tower as
in ``configs/qwen2_5_vl_7b``), frames are generated in memory and go through the package's own
collator, and every step runs the package's code:

1. **SFT step** (encode, prefill, target log-probs, backward, AdamW step) at 256 / 512 / 1,024
   frames of ``--side`` x ``--side`` pixels (default 224, the 7B configs' budget: 64 video tokens
   per frame pair): time and peak GPU memory;
2. **largest frame count that fits**: doubling the frame count from the largest that ran, until
   out of memory or out of time;
3. **GRPO step** (``GRPOModule`` in a Lightning Trainer: G=8 short responses from the policy
   engine, rewards, reference and update passes) with the embedding cache and shared prefill on,
   then both off: step time, per-phase times, encoder calls and peak memory, and the ratio.

Out of memory is recorded as a result, not raised. Every measurement first checks the time left
(``--budget-s``) against an estimate from the ones before and is skipped when it would not fit; a
watchdog ends the process (with the results so far on disk) if anything hangs past the budget.
Results: ``<out>.json`` after every measurement and ``<out>.md`` at the end.

On the GPU machine, from the repository root (see docs/benchmarks.md; needs torch, transformers,
lightning, torchmetrics, numpy: no PyAV, decord, jsonargparse or vLLM)::

    benchmarks/gpu_check.sh

On CPU at a toy shape (tests/test_gpu_check.py runs this)::

    python benchmarks/gpu_check.py --shape toy --device cpu --frames 4 8 --grpo-frames 4 --side 56 \
        --max-fit-frames 16 --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def use_source_tree() -> None:
    """Import lightning_longrl from this checkout when it is not installed (the GPU machine gets
    the working tree only): its callbacks/ and datamodules/ folders, which an installation maps to
    lightning_longrl.callbacks / .datamodules, are found through the package's search path."""
    try:
        import lightning_longrl.callbacks  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO))
        import lightning_longrl

        lightning_longrl.__path__.append(str(REPO))


# ------------------------------------------------------------------------------------ shapes
# Sizes from the public config.json files of Qwen/Qwen2.5-VL-7B-Instruct and -3B-Instruct.
_VISION_REAL = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                    spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                    tokens_per_second=2)
SHAPES = {
    "7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064, mrope_section=[16, 24, 24]),
               vision=dict(_VISION_REAL, out_hidden_size=3584), tie_word_embeddings=False),
    "3b": dict(text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, vocab_size=151936, mrope_section=[16, 24, 24]),
               vision=dict(_VISION_REAL, out_hidden_size=2048), tie_word_embeddings=True),
    "toy": dict(text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=None, mrope_section=[4, 6, 6]),
                vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=14,
                            spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                            tokens_per_second=2, out_hidden_size=128), tie_word_embeddings=False),
}


def model_config(shape: str, tokens_from):
    """A Qwen2.5-VL config of ``shape`` whose special token ids are those of ``tokens_from`` (the
    processor's checkpoint config), so the processor's prompts fit the model."""
    from transformers import Qwen2_5_VLConfig

    spec = SHAPES[shape]
    text = dict(spec["text"])
    section = text.pop("mrope_section")
    text.update(vocab_size=max(text["vocab_size"] or 0, tokens_from.text_config.vocab_size), rms_norm_eps=1e-6,
                max_position_embeddings=262144, bos_token_id=None, eos_token_id=tokens_from.text_config.eos_token_id,
                pad_token_id=tokens_from.text_config.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": section})
    ids = {k: getattr(tokens_from, k) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                "vision_end_token_id")}
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(spec["vision"]),
                            tie_word_embeddings=spec["tie_word_embeddings"], **ids)


# ---------------------------------------------------------------------------------- samples
def video_sample(frames: int, side: int, index: int = 0):
    """A question about ``frames`` synthetic frames (smooth moving colour fields, 1 frame/s)."""
    import numpy as np

    from lightning_longrl.data.dataset import VideoSample
    from lightning_longrl.data.records import VideoQARecord

    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    phase = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
    t = np.arange(frames, dtype=np.float32)[:, None, None] / 16.0
    channels = [np.sin(2 * np.pi * (x + y * (c + 1)) + t + phase[c]) for c in range(3)]
    pixels = ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)  # [F, H, W, 3]
    record = VideoQARecord(
        id=f"gpu-check-{index}", video=f"<synthetic video {index}, {frames} frames>", question="Which colour dominates the video?",
        options=("red", "green", "blue", "yellow"), answer="B",
        reasoning="The frames drift from blue to green and stay green for most of the video, so green.",
        category="Temporal")
    return VideoSample(record, pixels, np.arange(frames, dtype=np.float64))


def collate(processor, samples, mode: str):
    from lightning_longrl.data.collate import VideoQACollator

    return VideoQACollator(processor, mode=mode, think=True)(samples)


# --------------------------------------------------------------------------------- measuring
class Clock:
    """Wall time with the device synchronised, peak device memory, and the run's time budget."""

    def __init__(self, device: str, budget_s: float) -> None:
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")
        self.deadline = time.monotonic() + budget_s

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def sft_step(model, batch, optimizer) -> float:
    """One SFT step as SFTModule takes it: mean NLL of the target tokens, backward, optimizer step."""
    from lightning_longrl.inference.batch_ops import sft_token_logprobs

    logprobs, mask = sft_token_logprobs(model, batch)
    loss = -logprobs[mask].sum() / mask.sum().clamp(min=1)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def measure_sft(model, processor, frames: int, args, clock: Clock, optimizer) -> dict:
    began = time.perf_counter()
    batch = collate(processor, [video_sample(frames, args.side)], "sft").to(args.device)
    row = {"frames": frames, "tokens": int(batch.input_ids.shape[1]), "collate_seconds": time.perf_counter() - began,
           "video_tokens": int((batch.mm_token_type_ids == 2).sum())}
    try:
        sft_step(model, batch, optimizer)  # warm-up: kernels, allocator, optimizer state
        clock.sync()
        clock.reset_peak()
        began = time.perf_counter()
        loss = sft_step(model, batch, optimizer)
        clock.sync()
        row.update(seconds=time.perf_counter() - began, peak_gib=clock.peak_gib(), loss=loss, status="ok")
    except Exception as err:  # noqa: BLE001 - out of memory is a result; anything else is re-raised
        if not is_oom(err):
            raise
        optimizer.zero_grad(set_to_none=True)
        row.update(status="out of memory", error=str(err).splitlines()[0][:200])
    del batch
    clock.free()
    return row


def grpo_step(model, ref, processor, args, clock: Clock, cache: bool) -> dict:
    """Two GRPO steps of GRPOModule in a Trainer (warm-up, measured) with ``cache`` and shared
    prefill both on or both off; the measured step's times, encoder work and peak memory."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from lightning_longrl import GRPOModule
    from lightning_longrl.models.config import ModelConfig
    from lightning_longrl.rl.embedding_cache import EmbeddingCacheConfig
    from lightning_longrl.rl.objective import GRPOLossConfig
    from lightning_longrl.rl.rollout import SamplingConfig
    from lightning_longrl.rl.update import UpdateConfig

    class Record(L.Callback):
        def __init__(self) -> None:
            self.steps: list[dict] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            clock.sync()
            clock.reset_peak()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            clock.sync()
            self.steps.append({**{k: float(v) for k, v in trainer.callback_metrics.items()}, "peak_gib": clock.peak_gib()})

    # two batches of different videos: a warm-up step, then the measured one (which cannot reuse
    # the warm-up's cached embeddings)
    samples = [video_sample(args.grpo_frames, args.side, i) for i in range(2 * args.grpo_questions)]
    loader = DataLoader(samples, batch_size=args.grpo_questions, collate_fn=lambda s: collate(processor, s, "prompt"))
    module = GRPOModule(
        ModelConfig(path=str(args.processor_dir), dtype=args.dtype, gradient_checkpointing=True),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-6),
        sampling=SamplingConfig(num_samples=args.group, max_new_tokens=args.response_tokens, temperature=1.0),
        loss=GRPOLossConfig(kl_coef=0.01),  # the 7B config's KL: the reference pass runs
        embedding_cache=EmbeddingCacheConfig(enabled=cache, save_in_checkpoint=False),
        update=UpdateConfig(shared_prefill=cache),
    )
    module.model, module.ref = model, ref  # the random real-size models instead of checkpoint folders
    recorder = Record()
    trainer = L.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1,
        precision="bf16-true" if args.dtype == "bfloat16" else "32-true", max_steps=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=[recorder])
    setting = "cache+shared prefill" if cache else "no cache, no shared prefill"
    row = {"setting": setting, "frames": args.grpo_frames, "questions": args.grpo_questions, "group": args.group}
    try:
        trainer.fit(module, train_dataloaders=loader)
        step = recorder.steps[-1]
        row.update(status="ok", seconds=step["time/step"], peak_gib=step["peak_gib"],
                   encoder_calls=step.get("vision/encoder_calls"), encoded_videos=step.get("vision/encoded_videos"),
                   response_tokens_mean=step.get("response/length_mean"),
                   phases={k[5:]: v for k, v in step.items() if k.startswith("time/") and k != "time/step"})
    except Exception as err:  # noqa: BLE001
        if not is_oom(err):
            raise
        row.update(status="out of memory", error=str(err).splitlines()[0][:200])
    finally:
        model.zero_grad(set_to_none=True)
        del trainer, module
        clock.free()
    return row


# ------------------------------------------------------------------------------------ report
def markdown(result: dict) -> str:
    lines = [f"GPU check: {result['shape']} shape ({result['parameters_billion']:.3f} B parameters), {result['dtype']}, "
             f"{result['device_name']}, frames {result['side']}x{result['side']} px", "",
             "| SFT step | video tokens | seconds | peak GiB |", "|---:|---:|---:|---:|"]
    for r in result["sft"]:
        cells = (f"{r['seconds']:.2f} | {r['peak_gib']:.1f}" if r["status"] == "ok" and r["peak_gib"] is not None
                 else f"{r['seconds']:.2f} | -" if r["status"] == "ok" else f"{r['status']} | -")
        lines.append(f"| {r['frames']} frames | {r.get('video_tokens', '-')} | {cells} |")
    lines.append("")
    lines.append(f"Largest frame count that ran: {result.get('largest_fit_frames')} "
                 f"({result.get('largest_fit_note', '')})")
    if result["grpo"]:
        lines += ["", "| GRPO step | status | seconds | encode | rollout | old policy | reference | update | "
                      "encoder calls | peak GiB |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["grpo"]:
            if r["status"] != "ok":
                lines.append(f"| {r['setting']} | {r['status']} | | | | | | | | |")
                continue
            p = r["phases"]
            peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
            lines.append(f"| {r['setting']} | ok | {r['seconds']:.2f} | {p.get('encode', 0):.2f} | {p.get('rollout', 0):.2f} | "
                         f"{p.get('old_policy', 0):.2f} | {p.get('reference', 0):.2f} | {p.get('update', 0):.2f} | "
                         f"{r['encoder_calls']:.0f} | {peak} |")
        if result.get("grpo_speedup"):
            lines.append(f"\nCache + shared prefill: {result['grpo_speedup']:.2f}x faster per GRPO step.")
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(result["skipped"])]
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out.with_suffix(".json"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None, help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--frames", type=int, nargs="+", default=[256, 512, 1024], help="SFT frame counts")
    parser.add_argument("--max-fit-frames", type=int, default=8192, help="largest frame count the fit search tries")
    parser.add_argument("--side", type=int, default=224, help="frame side in pixels (a multiple of 28)")
    parser.add_argument("--grpo-frames", type=int, default=256)
    parser.add_argument("--grpo-questions", type=int, default=1)
    parser.add_argument("--group", type=int, default=8, help="G, responses per question")
    parser.add_argument("--response-tokens", type=int, default=32)
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting measurements after this")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check",
                        help="results go to <out>.json and <out>.md")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.side % 28:
        parser.error(f"--side must be a multiple of 28 (patch 14 x merge 2), got {args.side}")

    started = time.monotonic()
    faulthandler.dump_traceback_later(args.budget_s + 120, exit=True)  # never hang: results so far stay on disk
    use_source_tree()
    import torch
    import transformers
    from transformers import AutoConfig, AutoProcessor

    from lightning_longrl.models.config import ModelConfig, prepare_for_training
    from lightning_longrl.models.video_lm import VideoLanguageModel
    from lightning_longrl.parallel.ulysses import checkpoint_contexts
    from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; run with --device cpu --shape toy for the CPU check")
    clock = Clock(args.device, args.budget_s)
    result: dict = {
        "shape": args.shape, "dtype": args.dtype, "side": args.side, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sft": [], "grpo": [], "skipped": [],
    }
    if args.device.startswith("cuda"):
        result["device_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    with tempfile.TemporaryDirectory() as tmp:
        # the processor (tokenizer, video processor, chat template) of a tiny checkpoint: the real
        # model's sizes come from its config, its token ids from this processor's tokenizer
        args.processor_dir = create_tiny_checkpoint(Path(tmp) / "processor", TinyModelSpec(arch="qwen2_5_vl"))
        processor = AutoProcessor.from_pretrained(args.processor_dir, local_files_only=True)
        config = model_config(args.shape, AutoConfig.from_pretrained(args.processor_dir, local_files_only=True))
        began = time.perf_counter()
        torch.manual_seed(0)
        model = VideoLanguageModel.from_config(config, processor, args.dtype, "auto", args.device)
        model = prepare_for_training(model, ModelConfig(path="<random>", dtype=args.dtype, gradient_checkpointing=True),
                                     checkpoint_contexts)
        result["build_seconds"] = time.perf_counter() - began
        result["parameters_billion"] = sum(p.numel() for p in model.parameters()) / 1e9
        result["attention"] = {"vision": model.vision_tower.config._attn_implementation,
                               "language": model.language_model.config._attn_implementation}
        print(f"[gpu_check] {args.shape} model built in {result['build_seconds']:.0f} s "
              f"({result['parameters_billion']:.2f} B parameters, attention {result['attention']})", flush=True)
        write(result, args.out)

        # 1. SFT steps, then 2. doubling until it no longer fits
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        per_frame_s: list[float] = []  # seconds per frame of the steps so far (a step runs twice)
        counts = sorted(args.frames)
        largest, stopped = None, "every frame count tried ran"
        while counts:
            frames = counts.pop(0)
            estimate = 2 * frames * (max(per_frame_s) if per_frame_s else 0.0) * 1.3
            reserve = 60.0 if args.device.startswith("cuda") else 0.0  # for the GRPO steps
            if estimate > clock.left - reserve:
                result["skipped"].append(f"SFT at {frames} frames (about {estimate:.0f} s needed, {clock.left:.0f} s left)")
                stopped = f"{frames} frames not tried: out of time"
                break
            row = measure_sft(model, processor, frames, args, clock, optimizer)
            result["sft"].append(row)
            print(f"[gpu_check] SFT {frames} frames: {row['status']}"
                  + (f", {row['seconds']:.2f} s, peak {row['peak_gib']} GiB" if row["status"] == "ok" else ""), flush=True)
            write(result, args.out)
            if row["status"] != "ok":
                stopped = f"{frames} frames ran out of memory"
                break
            largest = frames
            per_frame_s.append((row["seconds"] + row["collate_seconds"] / 2) / frames)
            if not counts and frames * 2 <= args.max_fit_frames:
                counts.append(frames * 2)  # the fit search continues past the listed counts
        result["largest_fit_frames"], result["largest_fit_note"] = largest, stopped
        del optimizer
        model.zero_grad(set_to_none=True)
        clock.free()

        # 3. GRPO with and without the cache and shared prefill (a frozen reference of the same shape)
        grpo_estimate = 4 * 2 * args.grpo_frames * (min(per_frame_s) if per_frame_s else 0.0) + 20
        if clock.left < grpo_estimate:
            result["skipped"].append(f"GRPO steps (about {grpo_estimate:.0f} s needed, {clock.left:.0f} s left)")
        else:
            torch.manual_seed(0)
            ref = VideoLanguageModel.from_config(config, processor, args.dtype, "auto", args.device)
            ref.requires_grad_(False)
            for cache in (True, False):
                if clock.left < grpo_estimate / 2:
                    result["skipped"].append(f"GRPO with cache={cache}: out of time")
                    continue
                row = grpo_step(model, ref, processor, args, clock, cache)
                result["grpo"].append(row)
                print(f"[gpu_check] GRPO {row['setting']}: {row['status']}"
                      + (f", {row['seconds']:.2f} s" if row["status"] == "ok" else ""), flush=True)
                write(result, args.out)
            ok = {r["setting"]: r["seconds"] for r in result["grpo"] if r["status"] == "ok"}
            if len(ok) == 2:
                result["grpo_speedup"] = ok["no cache, no shared prefill"] / ok["cache+shared prefill"]
    result["total_seconds"] = time.monotonic() - started
    write(result, args.out)
    args.out.with_suffix(".md").write_text(markdown(result))
    faulthandler.cancel_dump_traceback_later()
    print(markdown(result), flush=True)
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
