"""Export the trained model as a Hugging Face folder when fitting ends."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


class HFExport(L.Callback):
    """After ``fit``, save weights, tokenizer and processor with ``save_pretrained``.

    The folder loads like any local checkpoint, so the next stage (e.g. GRPO after SFT) points
    its ``model.path`` at it.

    Args:
        dirpath: output folder; relative paths are resolved against the trainer's log directory.
    """

    def __init__(self, dirpath: str = "hf_model") -> None:
        self.dirpath = dirpath
        self.exported: Path | None = None

    def _target(self, trainer: L.Trainer) -> Path:
        path = Path(self.dirpath)
        if not path.is_absolute() and trainer.log_dir is not None:
            path = Path(trainer.log_dir) / path
        return path

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        export = getattr(pl_module, "export_pretrained", None)
        if export is None:
            raise TypeError(f"{type(pl_module).__name__} has no export_pretrained(path); HFExport cannot save it")
        if trainer.is_global_zero:
            self.exported = export(self._target(trainer))
            log.info("exported Hugging Face checkpoint to %s", self.exported)
        trainer.strategy.barrier("hf_export")
