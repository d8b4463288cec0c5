"""Run by tests/test_upstream_differences.py under torchrun with 2 CPU processes (gloo).

Each rank is its own group of one (so rank 1's group does not start at global rank 0). In that
group, torch.distributed.nn.functional.all_to_all (upstream) and
lightning_longrl.parallel.collectives.all_to_all (ours) each exchange a tensor; every rank writes
``rank<r>.json`` in the working directory saying which worked (a file per rank, because two
processes printing to one pipe can interleave their lines).

Then gradient clipping over a mix of sharded (DTensor, over both ranks) and plain gradients, as
the vision tower next to an FSDP2-sharded decoder has: torch.nn.utils.clip_grad_norm_ against
lightning_longrl.parallel.grads.clip_grad_norm (whose norm must equal that of the full tensors).
"""

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

from lightning_longrl.parallel.collectives import all_to_all
from lightning_longrl.parallel.grads import clip_grad_norm


def clipping_row() -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    full = torch.arange(8.0).view(4, 2)
    sharded = torch.nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
    sharded.grad = distribute_tensor(full.clone(), mesh, [Shard(0)])
    plain = torch.nn.Parameter(torch.ones(3))
    plain.grad = torch.full((3,), 2.0)
    expected = float(torch.cat([full.flatten(), plain.grad]).norm())
    row = {}
    try:
        torch.nn.utils.clip_grad_norm_([sharded, plain], 1e9)
        row["upstream_clip"] = "ok"
    except Exception as err:  # noqa: BLE001 - what upstream raises is the finding
        row["upstream_clip"] = f"{type(err).__name__}: {str(err)[:200]}"
    row["ours_clip"] = "ok" if abs(clip_grad_norm([sharded, plain], 1e9) - expected) < 1e-4 else "wrong norm"
    return row


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    groups = [dist.new_group([r]) for r in range(dist.get_world_size())]
    group = groups[rank]
    x = torch.arange(4.0).view(2, 2) + 10 * rank
    row = {"rank": rank}
    try:
        out = torch.cat(dist_nn.all_to_all([torch.empty_like(x)], [x], group=group))
        row["upstream"] = "ok" if torch.equal(out, x) else "wrong"
    except Exception as err:  # noqa: BLE001 - what upstream raises is the finding
        row["upstream"] = f"{type(err).__name__}: {str(err)[:200]}"
    row["ours"] = "ok" if torch.equal(all_to_all(x, 0, 0, group), x) else "wrong"
    row.update(clipping_row())
    Path(f"rank{rank}.json").write_text(json.dumps(row))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
