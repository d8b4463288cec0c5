"""A training data loader that a checkpoint can resume mid-epoch, in the same order.

The sampler shuffles with a seed derived from ``(seed, epoch)`` (like ``DistributedSampler``,
which it extends so that Lightning uses it as is in multi-process runs), and the loader records
in checkpoints how many batches of the epoch the trainer has finished. On resume the sampler
skips exactly those, so a resumed run sees the same batches in the same order as an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Epoch-seeded (optionally sharded) shuffling that can start part-way through an epoch."""

    def __init__(self, dataset: Dataset, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self._resume: tuple[int, int] | None = None  # (epoch, samples of this rank to skip)

    def resume(self, epoch: int, skip: int) -> None:
        """Start epoch ``epoch`` after its first ``skip`` samples (of this rank)."""
        self.epoch = epoch
        self._resume = (epoch, skip)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._resume is not None and self._resume[0] == self.epoch:
            indices = indices[self._resume[1] :]
        return iter(indices)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` with Lightning's ``state_dict`` / ``load_state_dict`` protocol.

    Args:
        batches_done: returns how many batches of the current epoch the trainer has finished (read
            when a checkpoint is written; batches prefetched by workers do not count).
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, batches_done: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches_done": int(self._batches_done()), "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(
                f"cannot resume the epoch's data order: the checkpoint was written with batch_size={state['batch_size']}, "
                f"this run uses {self.batch_size}"
            )
        self.sampler.resume(int(state["epoch"]), int(state["batches_done"]) * int(self.batch_size))
