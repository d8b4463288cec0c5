"""Keep a rollout engine's own copy of the weights (vLLM) equal to the policy's."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class VLLMWeightSync(L.Callback):
    """Push the policy's weights into the rollout engine after policy updates.

    A GRPO step samples first and updates after, so the weights reach the engine once per step,
    after the step's last optimizer step, in time for the next step's rollouts (a sync after each
    of a step's mini-batch optimizer steps would be overwritten unused). Sharded (FSDP) weights are
    gathered first; vLLM maps the Hugging Face names onto its own (fused) parameters and its
    prefix and encoder caches are cleared. The time each sync takes is logged as ``time/weight_sync``.

    ``GRPOModule`` adds this callback with its defaults when its engine needs it and the trainer
    has none.

    Args:
        every_n_steps: sync after every N-th policy update; between syncs the engine samples from
            older weights (``rollout/logprob_diff_*`` shows by how much). 0 never syncs (for
            experiments only: rollouts then stay with the weights the engine started with).
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        if every_n_steps < 0:
            raise ValueError(f"VLLMWeightSync every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.updates = 0
        self.syncs = 0
        self.last_seconds: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not callable(getattr(pl_module, "sync_rollout_weights", None)):
            raise TypeError(f"VLLMWeightSync needs a module with a rollout engine (GRPOModule), got {type(pl_module).__name__}")
        if not getattr(pl_module.engine, "needs_weight_sync", False):
            rank_zero_info("VLLMWeightSync: the rollout engine samples from the policy itself; nothing to sync")
        elif self.every_n_steps == 0:
            rank_zero_warn("VLLMWeightSync(every_n_steps=0): the rollout engine keeps its starting weights for the "
                           "whole run, so rollouts grow off-policy as training goes on")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not getattr(pl_module.engine, "needs_weight_sync", False) or not pl_module.policy_updated:
            return
        self.updates += 1
        if self.every_n_steps == 0 or self.updates % self.every_n_steps:
            return
        began = time.perf_counter()
        pl_module.sync_rollout_weights()
        self.last_seconds = time.perf_counter() - began
        self.syncs += 1
        pl_module.log("time/weight_sync", self.last_seconds, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "syncs": self.syncs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict["updates"])
        self.syncs = int(state_dict["syncs"])
