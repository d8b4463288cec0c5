"""Run by tests/test_eval.py under torchrun with 2 CPU processes (gloo): BenchmarkMetrics updated
with each rank's share of hand-made rows aggregates, in ``compute()``, to what one process gets
from all the rows. Rank 0 prints one JSON line per rank with both results.

usage: torchrun --nproc_per_node 2 eval_metrics_check.py
"""

import torch.distributed as dist

from lightning_longrl.inference.metrics import BenchmarkMetrics

from helpers import print_from_rank0  # noqa: E402  (tests/ is this script's folder)

GROUPS = ["Temporal", "Spatial", "Other"]
# (group, correct, well formed) of answered questions, then unreadable ones: uneven on purpose
ROWS = [("Temporal", True, True), ("Temporal", False, True), ("Spatial", True, False), ("Temporal", True, True),
        ("Other", False, False), ("Spatial", True, True), ("Spatial", False, True)]
UNREADABLE = ["Spatial", "Temporal", "Spatial"]


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    single = BenchmarkMetrics(GROUPS, sync_on_compute=False)
    single.update(*zip(*ROWS))
    single.update(UNREADABLE, [False] * len(UNREADABLE), [False] * len(UNREADABLE), [True] * len(UNREADABLE))
    shared = BenchmarkMetrics(GROUPS)
    mine, bad = ROWS[rank::world], UNREADABLE[rank::world]
    shared.update(*zip(*mine))
    shared.update(bad, [False] * len(bad), [False] * len(bad), [True] * len(bad))
    print_from_rank0({"single": single.compute(), "distributed": shared.compute(), "local_rows": len(mine)})
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
