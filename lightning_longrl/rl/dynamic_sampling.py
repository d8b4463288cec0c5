"""DAPO's dynamic sampling: keep only groups whose accuracy is mixed (the others have zero
advantage and teach nothing), sampling more questions until the batch is full."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lightning_longrl.distributed import reduce_scalar
from lightning_longrl.rl.advantages import informative_groups
from lightning_longrl.rl.groups import RolloutGroups


@dataclass
class DynamicSamplingConfig:
    """Online filtering: keep only groups whose accuracy is mixed, sampling more questions until
    the batch is full (DAPO's dynamic sampling)."""

    enabled: bool = False
    max_tries: int = 4
    """Batches of questions sampled at most per update; the update then runs with what was kept."""

    def __post_init__(self) -> None:
        if self.max_tries < 1:
            raise ValueError(f"dynamic_sampling max_tries must be >= 1, got {self.max_tries}")


class GroupBuffer:
    """Informative groups collected over batches until a full batch is there (per rank)."""

    def __init__(self, config: DynamicSamplingConfig, pad_token_id: int) -> None:
        self.config = config
        self.pad_token_id = pad_token_id
        self.groups: list[RolloutGroups] = []
        self.tries = 0

    def add(self, groups: RolloutGroups | None, wanted: int, metrics: dict[str, float]) -> RolloutGroups | None:
        """Add this round's informative groups; return a full batch when there is one (or when
        ``max_tries`` rounds are spent), else ``None``. Every data-parallel rank calls this together."""
        self.tries += 1
        if groups is not None:
            keep = informative_groups(groups.terms["accuracy"]).nonzero().flatten().tolist()
            metrics["groups/kept_fraction"] = len(keep) / groups.num_groups
            if keep:
                self.groups.append(groups.select(keep))
        buffered = sum(b.num_groups for b in self.groups)
        metrics["groups/buffered"] = float(buffered)
        # every rank decides together and takes as many groups as the poorest rank has, or the
        # data-parallel gradient all-reduces would not line up
        wanted = int(reduce_scalar(wanted, "min"))
        available = int(reduce_scalar(buffered, "min"))
        if available < max(wanted, 1) and self.tries < self.config.max_tries:
            return None
        self.tries = 0
        take = min(wanted, available) if wanted else available
        merged = RolloutGroups.cat(self.groups, self.pad_token_id) if self.groups else None
        self.groups = []  # a surplus is dropped (as DAPO does): after this update it would be off-policy
        if not take:
            return None
        metrics["groups/dropped_surplus"] = float(merged.num_groups - take)
        return merged.select(list(range(take)))

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": [b.state_dict() for b in self.groups], "tries": self.tries}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.groups = [RolloutGroups.from_state_dict(b, device) for b in state["buffer"]]
        self.tries = int(state["tries"])
