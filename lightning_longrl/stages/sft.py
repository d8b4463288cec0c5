"""Stage 1: chain-of-thought supervised fine-tuning (CoT-SFT)."""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable

from lightning_longrl.data.collate import VideoBatch
from lightning_longrl.inference.batch_ops import sft_token_logprobs
from lightning_longrl.models.config import ModelConfig
from lightning_longrl.stages.base import VideoQAStage
from lightning_longrl.stages.optim import LRSchedule


class SFTModule(VideoQAStage):
    """Supervised fine-tuning on ``<think>...</think><answer>...</answer>`` targets.

    The loss is the mean negative log-likelihood of the assistant's reasoning and answer tokens
    (and the end-of-turn token); prompt and video tokens are context only.

    Args:
        model: the checkpoint to train and how (dtype, frozen vision tower, checkpointing).
        optimizer: optimizer factory, e.g. ``torch.optim.AdamW`` with its ``lr``.
        lr_schedule: warmup and decay of the learning rate.
        max_new_tokens: response length limit in ``test``/``predict`` generation.
    """

    def __init__(
        self,
        model: ModelConfig,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule | None = None,
        max_new_tokens: int = 256,
    ) -> None:
        # from a checkpoint's hyper-parameters the configs come back as plain dicts
        model = ModelConfig(**model) if isinstance(model, dict) else model
        lr_schedule = LRSchedule(**lr_schedule) if isinstance(lr_schedule, dict) else (lr_schedule or LRSchedule())
        super().__init__(model, max_new_tokens)
        self.save_hyperparameters(ignore=["optimizer"])  # made checkpoint-safe in on_save_checkpoint
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule
        self._step_start = 0.0

    def collate_mode(self, stage: str) -> Literal["sft", "prompt"]:
        """Batches with targets for fit/validate; prompts for test/predict (generation)."""
        return "sft" if stage in ("fit", "validate") else "prompt"

    # ------------------------------------------------------------------------------- training
    def _loss(self, batch: VideoBatch) -> tuple[torch.Tensor, int]:
        logprobs, mask = sft_token_logprobs(self.model, batch, self.sp_group)
        count = int(mask.sum())
        return -logprobs[mask].sum() / max(count, 1), count

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def training_step(self, batch: VideoBatch, batch_idx: int) -> torch.Tensor:
        self.log("data/skipped_videos", float(batch.skipped_total))
        if len(batch) == 0:
            # Every sample of this batch was skipped. A zero loss that touches every trainable
            # parameter keeps data-parallel ranks running the same backward and gradient all-reduce.
            return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
        loss, targets = self._loss(batch)
        size = len(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/target_tokens", float(targets), batch_size=size)
        self.log("train/frames_per_sample", sum(batch.num_frames) / size, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: VideoBatch, batch_idx: int) -> None:
        elapsed = time.perf_counter() - self._step_start
        if len(batch) and elapsed > 0:
            self.log("train/tokens_per_s", float(batch.attention_mask.sum()) / elapsed, batch_size=len(batch))

    def validation_step(self, batch: VideoBatch, batch_idx: int) -> None:
        # An empty batch (all samples skipped) still logs, with weight 0, so every rank syncs the same keys.
        loss = self._loss(batch)[0] if len(batch) else torch.zeros((), device=self.device)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)

    # ------------------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = self.lr_schedule.build(optimizer, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
