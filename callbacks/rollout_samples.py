"""Write a few sampled GRPO completions, with the frames (or images) they saw, to TensorBoard."""

from __future__ import annotations

import html

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from lightning_longrl.rl.monitoring import frames_from_patches, thumbnail_grid


class RolloutSampleLogger(L.Callback):
    """Every ``every_n_steps`` training steps, log ``max_questions`` questions of the step with
    their best and worst sampled responses (text) and a thumbnail grid of each video's frames.

    Args:
        every_n_steps: logging interval in training steps (batches of questions).
        max_questions: questions shown per logging step.
        max_frames: frames in each thumbnail grid.
    """

    def __init__(self, every_n_steps: int = 50, max_questions: int = 2, max_frames: int = 16) -> None:
        if every_n_steps < 1 or max_questions < 1 or max_frames < 1:
            raise ValueError("RolloutSampleLogger: every_n_steps, max_questions and max_frames must be >= 1")
        self.every_n_steps = every_n_steps
        self.max_questions = max_questions
        self.max_frames = max_frames
        self.logged_steps: list[int] = []
        self._warned = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        view = getattr(pl_module, "last_rollouts", None)
        if view is None or not trainer.is_global_zero or step % self.every_n_steps:
            return
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if logger is None:
            if not self._warned:
                rank_zero_warn("RolloutSampleLogger needs a TensorBoardLogger; no samples are logged")
                self._warned = True
            return
        writer = logger.experiment
        group = view.rewards.shape[1]
        for q, record in enumerate(view.records[: self.max_questions]):
            rewards = view.rewards[q]
            best, worst = int(rewards.argmax()), int(rewards.argmin())
            lines = [
                f"**{html.escape(record.id)}** ({record.category or 'no category'}) - answer: {html.escape(record.answer)}",
                f"question: {html.escape(record.question)}",
                f"rewards: {', '.join(f'{r:.2f}' for r in rewards.tolist())}",
                f"best (reward {rewards[best]:.2f}):\n\n    {view.texts[q * group + best]}",
                f"worst (reward {rewards[worst]:.2f}):\n\n    {view.texts[q * group + worst]}",
            ]
            writer.add_text(f"rollouts/question_{q}", "\n\n".join(lines), global_step=step)
            if record.modality == "text":
                continue
            # the processor that made the patches: an image's holds it twice over its temporal patch
            vp = pl_module.processor.video_processor if record.modality == "video" else pl_module.processor.image_processor
            grids = view.grid_thw[q].cpu()
            items = view.pixel_values[q].cpu().split(grids.prod(-1).tolist())
            for j, (pixels, grid) in enumerate(zip(items, grids)):
                frames = frames_from_patches(pixels, grid, vp.patch_size, vp.merge_size, vp.temporal_patch_size,
                                             list(vp.image_mean), list(vp.image_std))
                if record.modality == "video":
                    writer.add_image(f"rollouts/frames_{q}", thumbnail_grid(frames, self.max_frames), global_step=step)
                else:
                    writer.add_image(f"rollouts/image_{q}_{j}", frames[0], global_step=step, dataformats="HWC")
        self.logged_steps.append(step)
