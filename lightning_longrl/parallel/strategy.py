"""``MRSPStrategy``: data parallelism over groups of sequence-parallel ranks (MR-SP).

The world of ``N`` processes is split into ``N / sp_size`` data-parallel groups of ``sp_size``
consecutive ranks. Every rank of a sequence-parallel group receives the same batches (the
distributed sampler runs over the data-parallel dimension only); within the group, a video's
frames are encoded in parallel and the prefill runs sequence-parallel (see
:mod:`lightning_longrl.parallel`). Gradients are averaged over the whole world as in DDP: every
rank of a group computes the group's whole loss, and the gathers' backward sums the group's
contributions, so the world average is exactly the data-parallel average.

    trainer:
      strategy:
        class_path: lightning_longrl.parallel.MRSPStrategy
        init_args:
          sp_size: 2
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy


class MRSPStrategy(DDPStrategy):
    """DDP whose ranks form sequence-parallel groups of ``sp_size``.

    Args:
        sp_size: ranks per sequence-parallel group (1: plain DDP). Must divide the world size.
        **kwargs: passed on to :class:`~lightning.pytorch.strategies.DDPStrategy`.
    """

    strategy_name = "mrsp"

    def __init__(self, sp_size: int = 1, **kwargs: Any) -> None:
        if sp_size < 1:
            raise ValueError(f"MRSPStrategy sp_size must be >= 1, got {sp_size}")
        super().__init__(**kwargs)
        self.sp_size = sp_size
        self._sp_group: dist.ProcessGroup | None = None

    def setup_distributed(self) -> None:
        super().setup_distributed()
        world = self.world_size
        if world % self.sp_size:
            raise ValueError(f"MRSPStrategy: sp_size={self.sp_size} does not divide the {world} processes "
                             f"(devices x num_nodes)")
        # every rank creates every group, in the same order (a requirement of new_group)
        for start in range(0, world, self.sp_size):
            group = dist.new_group(list(range(start, start + self.sp_size)))
            if start <= self.global_rank < start + self.sp_size:
                self._sp_group = group

    @property
    def sp_group(self) -> dist.ProcessGroup | None:
        """This rank's sequence-parallel group (``None`` when ``sp_size`` is 1)."""
        return self._sp_group if self.sp_size > 1 else None

    @property
    def sp_rank(self) -> int:
        return self.global_rank % self.sp_size

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    @property
    def dp_rank(self) -> int:
        return self.global_rank // self.sp_size

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """Shard data over the data-parallel groups only: a group's ranks see the same samples."""
        return {"num_replicas": self.dp_size, "rank": self.dp_rank}
