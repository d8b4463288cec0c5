"""Weight sharding under MR-SP: per-rank model-state memory with replicated and sharded weights.

A group of processes (torchrun, gloo, CPU) loads a random Qwen2.5-VL of the given size, wraps it
as :class:`~lightning_longrl.parallel.MRSPStrategy` does (``shard_weights``: FSDP2 units from
:func:`~lightning_longrl.parallel.strategy.shard_model`; otherwise one full copy per rank) and
runs sequence-parallel prefill + backward + an AdamW step on a random sequence. Reported per
rank: the bytes of the parameters, gradients and optimizer state that the rank's tensors hold
(counted from the tensors, so exact), and the median step time.

    .venv/bin/python benchmarks/weight_sharding.py                        # 4 processes, sp 2
    .venv/bin/python benchmarks/weight_sharding.py --procs 2 --sp 2 --width 512 --layers 4

Results go to benchmarks/results/weight_sharding.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _gib(tensors) -> float:
    return sum(_local(t).numel() * _local(t).element_size() for t in tensors) / 2**30


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    from lightning_longrl.models.video_lm import LMInputs, VideoLanguageModel
    from lightning_longrl.parallel.sequence import sp_hidden_states, sp_score_targets
    from lightning_longrl.parallel.strategy import shard_model
    from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint

    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    group = next(g for start in range(0, size, args.sp)
                 for g in [dist.new_group(list(range(start, start + args.sp)))] if start <= rank < start + args.sp)
    spec = TinyModelSpec(arch="qwen2_5_vl", hidden_size=args.width, num_heads=args.heads, num_kv_heads=2,
                         num_layers=args.layers, intermediate_size=args.width * 11 // 4)
    path = args.workdir / f"model-w{args.width}-h{args.heads}-l{args.layers}"
    if rank == 0 and not (path / "config.json").exists():
        create_tiny_checkpoint(path, spec)
    dist.barrier()
    class Root(nn.Module):  # stands for the LightningModule that the strategy shards
        def __init__(self) -> None:
            super().__init__()
            self.model = VideoLanguageModel.from_pretrained(path).train()

    root = Root()
    model = root.model
    if args.shard:
        shard_model(root, torch.device("cpu"), size)
    optimizer = torch.optim.AdamW([p for p in root.parameters() if p.requires_grad], lr=1e-5)
    torch.manual_seed(rank // args.sp)
    length = args.length
    inputs = LMInputs(torch.randn(1, length, args.width) * 0.02, torch.ones(1, length, dtype=torch.long),
                      torch.arange(length).view(1, 1, -1).expand(3, 1, -1))
    ids = torch.randint(0, 500, (1, length))
    targets = torch.zeros(1, length, dtype=torch.bool)
    targets[:, -128:] = True
    seconds, grads_gib = [], 0.0
    for _ in range(args.repeats):
        dist.barrier()
        began = time.perf_counter()
        hidden, shard = sp_hidden_states(model, inputs, group)
        scores = sp_score_targets(model, hidden, shard, ids, targets, group)
        (-scores.logprobs.sum()).backward()
        if not args.shard:  # what DDP's all-reduce does
            for p in root.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= size
        grads_gib = _gib(p.grad for p in root.parameters() if p.grad is not None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - began)
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    row = {"rank": rank, "params_gib": _gib(root.parameters()), "grads_gib": grads_gib, "optimizer_gib": _gib(state),
           "total_params": sum(p.numel() for p in VideoLanguageModel.from_pretrained(path).parameters()),
           "seconds": statistics.median(seconds)}
    rows = [None] * size
    dist.all_gather_object(rows, row)
    if rank == 0:
        print(json.dumps(rows), flush=True)
    dist.destroy_process_group()


def measure(shard: bool, args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.procs), "--master_addr",
           "127.0.0.1", "--master_port", str(port), __file__, "--worker", "--sp", str(args.sp), "--length",
           str(args.length), "--width", str(args.width), "--heads", str(args.heads), "--layers", str(args.layers),
           "--repeats", str(args.repeats), "--workdir", str(args.workdir)] + (["--shard"] if shard else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.procs))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "Error" in line] or proc.stderr.splitlines()[-1:]
        return {"shard_weights": shard, "error": errors[-1][:300]}
    ranks = json.loads(proc.stdout.strip().splitlines()[-1])
    worst = max(ranks, key=lambda r: r["params_gib"] + r["grads_gib"] + r["optimizer_gib"])
    return {"shard_weights": shard, "params_gib": worst["params_gib"], "grads_gib": worst["grads_gib"],
            "optimizer_gib": worst["optimizer_gib"], "total_params": worst["total_params"],
            "seconds": max(r["seconds"] for r in ranks), "ranks": ranks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--sp", type=int, default=2)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "weight_sharding")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "weight_sharding.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = [measure(shard, args) for shard in (False, True)]
    result = {
        "command": "python benchmarks/weight_sharding.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "setup": {"procs": args.procs, "sp": args.sp, "length": args.length, "width": args.width,
                  "heads": args.heads, "layers": args.layers},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.procs} processes, sp {args.sp}, {args.length} tokens")
    print("| weights | parameters | GiB/rank: params | grads | AdamW state | total | s/step |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {'sharded' if r['shard_weights'] else 'replicated'} | failed: {r['error']} |")
            continue
        total = r["params_gib"] + r["grads_gib"] + r["optimizer_gib"]
        print(f"| {'sharded' if r['shard_weights'] else 'replicated'} | {r['total_params'] / 1e6:.1f} M | "
              f"{r['params_gib']:.3f} | {r['grads_gib']:.3f} | {r['optimizer_gib']:.3f} | {total:.3f} | "
              f"{r['seconds']:.2f} |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
