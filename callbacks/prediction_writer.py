"""Write ``predict`` outputs as JSONL, batch by batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_longrl.callbacks.paths import resolve_in_log_dir


class JSONLPredictionWriter(BasePredictionWriter):
    """Append each predict batch's rows (dicts) to a JSONL file as soon as the batch finishes.

    Args:
        path: output file; relative paths are resolved against the trainer's log directory. With
            several processes, each rank writes ``<stem>.rank<N><suffix>``.
    """

    def __init__(self, path: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.written: Path | None = None

    def _target(self, trainer: L.Trainer) -> Path:
        path = resolve_in_log_dir(trainer, self.path)
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = self._target(trainer)
        self.written.parent.mkdir(parents=True, exist_ok=True)
        self.written.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction: Any, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        with self.written.open("a", encoding="utf-8") as handle:
            for row in prediction or []:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
