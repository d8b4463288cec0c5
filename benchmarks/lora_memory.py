"""LoRA against full fine-tuning: per-rank memory of GRPO training, through Lightning.

Each configuration runs two GRPO steps of a random Qwen2.5-VL of the given size (default 1,024
wide, 8 layers: 0.1 B parameters) on 2 CPU processes (gloo) under ``MRSPStrategy``, with
replicated or sharded (``--shard``) weights, a KL term (so full fine-tuning loads a frozen
reference copy, and LoRA uses the policy with its adapters off), and AdamW. Reported per rank,
counted from the tensors the rank holds (exact): parameters, gradients, optimizer state, the
reference model; and the process's peak resident memory (glibc's mmap threshold fixed at 64 KiB,
as in benchmarks/sequence_parallel.py, so that freed tensors are returned).

    .venv/bin/python benchmarks/lora_memory.py                  # -> benchmarks/results/lora_memory.json
    .venv/bin/python benchmarks/lora_memory.py --width 512 --layers 4 --rank 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {"full": (False, False), "full, sharded": (False, True), "LoRA": (True, False), "LoRA, sharded": (True, True)}


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _gib(tensors) -> float:
    return sum(_local(t).numel() * _local(t).element_size() for t in tensors) / 2**30


def worker(args) -> None:
    import lightning as L
    import torch

    from lightning_longrl import GRPOModule
    from lightning_longrl.datamodules import LongVideoDataModule
    from lightning_longrl.models.config import ModelConfig
    from lightning_longrl.models.lora import LoRAConfig
    from lightning_longrl.parallel import MRSPStrategy
    from lightning_longrl.rl.objective import GRPOLossConfig
    from lightning_longrl.rl.rollout import SamplingConfig

    class Measure(L.Callback):
        gradients_gib = 0.0

        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:  # gradients are freed after the step
            grads = [p.grad for p in module.model.parameters() if p.grad is not None]
            self.gradients_gib = max(self.gradients_gib, _gib(grads))

        def on_train_end(self, trainer, module) -> None:
            optimizer = trainer.optimizers[0]
            state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
            params = list(module.model.parameters())
            row = {
                "rank": trainer.global_rank,
                "parameters_gib": _gib(params),
                "trainable_parameters": sum(_local(p).numel() for p in params if p.requires_grad),
                "gradients_gib": self.gradients_gib,
                "optimizer_state_gib": _gib(state),
                "reference_gib": _gib(module.ref.parameters()) if module.ref is not None else 0.0,
                "policy_updated": bool(module.policy_updated),
            }
            row["model_state_gib"] = sum(row[k] for k in ("parameters_gib", "gradients_gib", "optimizer_state_gib",
                                                          "reference_gib"))
            row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            (args.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(row))

    lora = LoRAConfig(rank=args.rank, alpha=2.0 * args.rank) if args.lora else None
    module = GRPOModule(ModelConfig(path=str(args.checkpoint), lora=lora),
                        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-5),
                        sampling=SamplingConfig(num_samples=4, max_new_tokens=16), loss=GRPOLossConfig(kl_coef=0.01))
    data = LongVideoDataModule(train_file=str(args.data / "train.jsonl"), num_frames=16, max_pixels=56 * 56,
                               batch_size=1, num_workers=0)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=MRSPStrategy(sp_size=1, shard_weights=args.shard),
                        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Measure()])
    trainer.fit(module, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks/.cache/lora_memory")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/lora_memory.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from lightning_longrl.synth.dataset import SynthConfig, generate_dataset
    from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint

    checkpoint = args.workdir / f"model-w{args.width}-l{args.layers}"
    create_tiny_checkpoint(checkpoint, TinyModelSpec(arch="qwen2_5_vl", hidden_size=args.width, num_heads=args.heads,
                                                     num_kv_heads=4, num_layers=args.layers,
                                                     intermediate_size=args.width * 11 // 4))
    data = args.workdir / "data"
    if not (data / "train.jsonl").is_file():
        generate_dataset(SynthConfig(out_dir=str(data), num_videos=8, duration=16.0, seed=0))
    rows = {}
    for name, (lora, shard) in MODES.items():
        out_dir = args.workdir / name.replace(", ", "-")
        out_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--worker", "--checkpoint", str(checkpoint), "--data", str(data),
                   "--out-dir", str(out_dir), "--rank", str(args.rank)] + ["--lora"] * lora + ["--shard"] * shard
        began = time.perf_counter()
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
        ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
        rows[name] = {"seconds": round(time.perf_counter() - began, 1), "ranks": ranks}
        worst = max(ranks, key=lambda r: r["peak_rss_gib"])
        print(f"{name:14s} model state {worst['model_state_gib']:.3f} GiB/rank (params {worst['parameters_gib']:.3f}, "
              f"grads {worst['gradients_gib']:.3f}, optimizer {worst['optimizer_state_gib']:.3f}, reference "
              f"{worst['reference_gib']:.3f}); peak RSS {worst['peak_rss_gib']:.2f} GiB", flush=True)
    result = {"model": {"width": args.width, "layers": args.layers, "heads": args.heads}, "lora_rank": args.rank,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
