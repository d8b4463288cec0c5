"""What the SFT and GRPO stages share: the model they load, evaluation by generation (overall
and per reasoning category), prediction rows, checkpoint hyper-parameters and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_longrl.data.collate import VideoBatch
from lightning_longrl.data.records import CATEGORIES
from lightning_longrl.inference.answers import answer_batch
from lightning_longrl.inference.metrics import BenchmarkMetrics
from lightning_longrl.models.config import ModelConfig, load_model, load_processor
from lightning_longrl.models.lora import adapter_scalings, merged_weights
from lightning_longrl.models.video_lm import VideoLanguageModel
from lightning_longrl.parallel.grads import clip_grad_norm
from lightning_longrl.parallel.ulysses import checkpoint_contexts
from lightning_longrl.stages.hparams import portable_hparams

OTHER_CATEGORY = "Other"
_CATEGORY_SLOTS = (*CATEGORIES, OTHER_CATEGORY)


class VideoQAStage(L.LightningModule):
    """Base of the training stages.

    Args:
        model: the checkpoint to train and how.
        max_new_tokens: response length limit of evaluation (``test``/``predict``) generation.
    """

    def __init__(self, model: ModelConfig, max_new_tokens: int = 256) -> None:
        super().__init__()
        self.model_config = model
        self.max_new_tokens = max_new_tokens
        self.processor = load_processor(model)
        self.model: VideoLanguageModel | None = None
        self.eval_metrics: BenchmarkMetrics | None = None  # built at the first evaluation batch

    def configure_model(self) -> None:
        if self.model is None:
            self.model = load_model(self.model_config, self.processor, checkpoint_contexts)

    # ----------------------------------------------------------------------------- evaluation
    def evaluate_batch(self, batch: VideoBatch, prefix: str) -> None:
        """Greedy answers to a prompt batch, counted into the benchmark metrics (the same ones as
        ``lightning-longrl eval``) that :meth:`log_category_accuracy` logs at the end of the loop."""
        if self.eval_metrics is None:
            self.eval_metrics = BenchmarkMetrics(_CATEGORY_SLOTS).to(self.device)
        if len(batch):
            rows = answer_batch(self.model, batch, self.max_new_tokens)
            groups = [r.category if r.category in CATEGORIES else OTHER_CATEGORY for r in batch.records]
            self.eval_metrics.update(groups, [row["correct"] for row in rows], [row["well_formed"] for row in rows])

    def log_category_accuracy(self, prefix: str) -> None:
        """Log ``{prefix}/accuracy``, ``{prefix}/format_rate`` and ``{prefix}/accuracy/<category>``
        for every category seen, aggregated over all ranks (torchmetrics' sum of counts)."""
        metrics = self.eval_metrics if self.eval_metrics is not None else BenchmarkMetrics(_CATEGORY_SLOTS).to(self.device)
        values = metrics.compute()
        metrics.reset()
        self.log(f"{prefix}/accuracy", values["accuracy"], rank_zero_only=True)
        self.log(f"{prefix}/format_rate", values["format_rate"], rank_zero_only=True)
        for name in _CATEGORY_SLOTS:
            if f"accuracy/{name}" in values:
                self.log(f"{prefix}/accuracy/{name}", values[f"accuracy/{name}"], rank_zero_only=True)

    def test_step(self, batch: VideoBatch, batch_idx: int) -> None:
        self.evaluate_batch(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.log_category_accuracy("test")

    def predict_step(self, batch: VideoBatch, batch_idx: int) -> list[dict[str, Any]]:
        if len(batch) == 0:
            return []
        keys = ("id", "category", "response", "prediction", "answer", "correct")
        return [{k: row[k] for k in keys} for row in answer_batch(self.model, batch, self.max_new_tokens)]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Norm clipping that also works when some gradients are FSDP2 shards and some are not
        (``MRSPStrategy(shard_weights=True)``); anything else is Lightning's own clipping."""
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            clip_grad_norm(params, float(gradient_clip_val))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        portable_hparams(checkpoint, self)

    @property
    def sp_group(self):
        """The sequence-parallel group of this rank under :class:`~lightning_longrl.parallel.MRSPStrategy`
        with ``sp_size > 1``; ``None`` otherwise."""
        return getattr(self._trainer.strategy, "sp_group", None) if self._trainer is not None else None

    @property
    def data_rank(self) -> int:
        """This rank's index among the data-parallel replicas (ranks of one sequence-parallel group
        share it: they see the same samples and must draw the same random numbers)."""
        if self._trainer is None:
            return 0
        return getattr(self._trainer.strategy, "dp_rank", self.global_rank)

    # -------------------------------------------------------------------------------- export
    def export_pretrained(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write weights, tokenizer and processor as a Hugging Face folder.

        Args:
            path: output folder.
            state_dict: this module's full state dict (as gathered by the strategy when the
                weights are sharded); the model's own weights when ``None``.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        weights = None
        if state_dict is not None:
            prefix = "model.hf."
            weights = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if scalings := adapter_scalings(self.model.hf):  # LoRA: the adapters folded into the weights, original names
            weights = dict(merged_weights((weights or self.model.hf.state_dict()).items(), scalings))
        self.model.hf.save_pretrained(path, state_dict=weights)
        self.processor.save_pretrained(path)
        return path
