"""Export the trained model as a Hugging Face folder when fitting ends."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from lightning_longrl.callbacks.paths import resolve_in_log_dir

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

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        export = getattr(pl_module, "export_pretrained", None)
        if export is None:
            raise TypeError(f"{type(pl_module).__name__} has no export_pretrained(path, state_dict); HFExport cannot save it")
        if getattr(trainer.strategy, "_state_dict_type", None) == "sharded":
            raise RuntimeError(
                "HFExport needs full weights, but the FSDP strategy gathers sharded state dicts; "
                "set the strategy's state_dict_type to 'full' (or drop HFExport and convert a checkpoint later)"
            )
        # Every rank takes part in gathering the full weights (sharded strategies need it); rank 0 writes.
        state_dict = trainer.strategy.lightning_module_state_dict()
        target = resolve_in_log_dir(trainer, self.dirpath)  # every rank: the log dir is broadcast from rank 0
        if trainer.is_global_zero:
            self.exported = export(target, state_dict)
            log.info("exported Hugging Face checkpoint to %s", self.exported)
        trainer.strategy.barrier("hf_export")
