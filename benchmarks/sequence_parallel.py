"""Sequence-parallel prefill + backward: per-rank peak memory and time against sequence length.

For each group size (``--sp``) and sequence length, a fresh group of processes (torchrun, gloo,
CPU) runs the language model of a small random Qwen2.5-VL (default: width 256, 8 heads, 4 layers)
on a whole sequence of input embeddings, sequence-parallel when the group has more than one
rank, scores the last 128 positions and backpropagates. Reported per rank: the peak resident
memory above the memory held before the step (``ru_maxrss`` minus the RSS after loading; the
activations, attention scores and gradients of one step), the bytes of the tensors autograd
keeps for the backward (counted by storage; the activations alone, whatever the allocator does)
and the median step time.

    .venv/bin/python benchmarks/sequence_parallel.py                       # sp 1 2 4, 1k-8k tokens
    .venv/bin/python benchmarks/sequence_parallel.py --sp 1 2 --lengths 2048 4096 --cap-gib 2

What RSS measures depends on the C allocator. glibc's default raises its mmap threshold as
tensors are freed, so later tensors of a few MiB come from the heap, and the heap keeps the pages
of freed ones: the RSS peak then counts memory no tensor holds any more (at 8k tokens with sp 2,
0.53 GiB instead of 0.31). ``--malloc release`` (the default) fixes the threshold at 64 KiB
(``MALLOC_MMAP_THRESHOLD_``) so every tensor of 64 KiB or more is its own mapping, returned on
free, and the RSS peak follows the live tensors, as a GPU's ``max_memory_allocated`` does;
``--malloc glibc`` measures with the allocator's defaults (the figures before 2026-12-07).

With ``--cap-gib`` the table also says, per group size, the longest measured length whose
per-rank peak stays under the cap. Results go to benchmarks/results/sequence_parallel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def worker(args) -> None:
    import psutil
    import torch
    import torch.distributed as dist

    from lightning_longrl.models.video_lm import LMInputs, VideoLanguageModel
    from lightning_longrl.parallel.sequence import sp_hidden_states, sp_score_targets
    from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint

    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    spec = TinyModelSpec(arch="qwen2_5_vl", hidden_size=args.width, num_heads=args.heads, num_kv_heads=2,
                         num_layers=args.layers, intermediate_size=2 * args.width)
    path = args.workdir / f"model-w{args.width}-h{args.heads}-l{args.layers}"
    if rank == 0:
        create_tiny_checkpoint(path, spec)
    dist.barrier()
    model = VideoLanguageModel.from_pretrained(path).train()
    torch.manual_seed(0)
    length = args.length
    embeds = torch.randn(1, length, args.width) * 0.02
    inputs = LMInputs(embeds, torch.ones(1, length, dtype=torch.long), torch.arange(length).view(1, 1, -1).expand(3, 1, -1))
    ids = torch.randint(0, 500, (1, length))
    targets = torch.zeros(1, length, dtype=torch.bool)
    targets[:, -128:] = True
    group = dist.group.WORLD

    saved: dict[int, int] = {}  # storage -> bytes of the tensors autograd keeps for the backward

    def keep(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def step() -> None:
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            if size == 1:
                scores = model.score_targets(model.hidden_states(inputs), ids, targets)
            else:
                hidden, shard = sp_hidden_states(model, inputs, group)
                scores = sp_score_targets(model, hidden, shard, ids, targets, group)
        (-scores.logprobs.sum()).backward()
        model.zero_grad(set_to_none=True)

    before = psutil.Process().memory_info().rss
    seconds = []
    for _ in range(args.repeats):
        dist.barrier()
        began = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - began)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    row = {"rank": rank, "peak_gib": max(peak - before, 0) / 2**30, "seconds": statistics.median(seconds),
           "saved_for_backward_gib": sum(saved.values()) / 2**30}
    rows = [None] * size
    dist.all_gather_object(rows, row)
    if rank == 0:
        print(json.dumps(rows), flush=True)
    dist.destroy_process_group()


def measure(sp: int, length: int, args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(sp), "--master_addr", "127.0.0.1",
           "--master_port", str(port), __file__, "--worker", "--length", str(length), "--width", str(args.width),
           "--heads", str(args.heads), "--layers", str(args.layers), "--repeats", str(args.repeats),
           "--workdir", str(args.workdir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // sp))}
    if args.malloc == "release":
        env["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        return {"sp": sp, "length": length, "error": proc.stderr.strip().splitlines()[-1][:300]}
    ranks = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"sp": sp, "length": length, "peak_gib_max_rank": max(r["peak_gib"] for r in ranks),
            "saved_for_backward_gib_max_rank": max(r["saved_for_backward_gib"] for r in ranks),
            "seconds": max(r["seconds"] for r in ranks), "ranks": ranks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sp", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cap-gib", type=float, default=None, help="memory cap per rank for the longest-fit column")
    parser.add_argument("--malloc", choices=["release", "glibc"], default="release",
                        help="release: tensors of 64 KiB or more are unmapped when freed (RSS follows live tensors); "
                             "glibc: the allocator's defaults")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "sequence_parallel")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "sequence_parallel.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    for sp in args.sp:
        for length in args.lengths:
            row = measure(sp, length, args)
            rows.append(row)
            if "error" in row:
                print(f"sp {sp}, {length} tokens: failed: {row['error']}", flush=True)
            else:
                print(f"sp {sp}, {length:6d} tokens: {row['peak_gib_max_rank']:.2f} GiB peak per rank "
                      f"({row['saved_for_backward_gib_max_rank']:.2f} saved for the backward), {row['seconds']:.2f} s",
                      flush=True)
    result = {
        "command": "python benchmarks/sequence_parallel.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "malloc": args.malloc,
        "model": {"width": args.width, "heads": args.heads, "kv_heads": 2, "layers": args.layers},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ok = [r for r in rows if "error" not in r]
    print("\n| length | " + " | ".join(f"sp {sp}: GiB/rank, s" for sp in args.sp) + " |")
    print("|---:|" + "---:|" * len(args.sp))
    for length in args.lengths:
        cells = []
        for sp in args.sp:
            r = next((x for x in ok if x["sp"] == sp and x["length"] == length), None)
            cells.append(f"{r['peak_gib_max_rank']:.2f}, {r['seconds']:.2f}" if r else "failed")
        print(f"| {length} | " + " | ".join(cells) + " |")
    if args.cap_gib is not None:
        for sp in args.sp:
            fits = [r["length"] for r in ok if r["sp"] == sp and r["peak_gib_max_rank"] <= args.cap_gib]
            print(f"sp {sp}: longest measured length under {args.cap_gib} GiB per rank: {max(fits) if fits else 'none'}")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
