"""Save the metrics of a test or validation run as JSON (for reports and tables)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from lightning_longrl.callbacks.paths import resolve_in_log_dir


class MetricsJSON(L.Callback):
    """At the end of ``test`` (and ``validate``), write the logged metrics to a JSON file.

    Args:
        path: output file; relative paths are resolved against the trainer's log directory (or
            the working directory when there is no logger).
    """

    def __init__(self, path: str = "metrics.json") -> None:
        self.path = path
        self.written: Path | None = None

    def _write(self, trainer: L.Trainer) -> None:
        path = resolve_in_log_dir(trainer, self.path)  # every rank: the log dir is broadcast from rank 0
        if not trainer.is_global_zero:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items())}
        path.write_text(json.dumps(metrics, indent=2) + "\n")
        self.written = path

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer)
