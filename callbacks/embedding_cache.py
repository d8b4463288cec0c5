"""Keep the video-embedding cache consistent with the vision weights."""

from __future__ import annotations

from typing import Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class EmbeddingCacheInvalidation(L.Callback):
    """Invalidate cached video embeddings when an optimizer step changes the vision weights.

    With a frozen vision tower and projector (the default for RL) the entries stay valid for the
    whole run, so a video seen again in a later step or epoch is not re-encoded. When either is
    trainable, every optimizer step makes the policy's entries stale; they are dropped before the
    weights change, so the next step encodes with the new weights.

    Args:
        mode: ``auto`` invalidates exactly when some vision parameter requires grad; ``always``
            and ``never`` force the choice.
    """

    def __init__(self, mode: Literal["auto", "always", "never"] = "auto") -> None:
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"EmbeddingCacheInvalidation mode must be auto, always or never, got {mode!r}")
        self.mode = mode
        self.active = False
        self.invalidations = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "cache", None) is None:
            raise TypeError(f"EmbeddingCacheInvalidation needs a module with an embedding `cache`, got {type(pl_module).__name__}")
        trainable = any(p.requires_grad for p in pl_module.model.vision_tower.parameters())
        self.active = self.mode == "always" or (self.mode == "auto" and trainable)
        state = "trainable" if trainable else "frozen"
        action = "invalidated after every optimizer step" if self.active else "kept across steps"
        rank_zero_info(f"vision tower {state}: cached video embeddings are {action}")

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self.active:
            pl_module.cache.invalidate("policy")
            self.invalidations += 1
