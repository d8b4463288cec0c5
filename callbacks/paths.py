"""Where callbacks put their files."""

from __future__ import annotations

from pathlib import Path

import lightning as L


def resolve_in_log_dir(trainer: L.Trainer, path: str | Path) -> Path:
    """``path`` itself when absolute, else inside the trainer's log directory (the run's version folder).

    A collective under several processes (``trainer.log_dir`` is broadcast from rank 0): call it on
    every rank, never only on rank 0.
    """
    path = Path(path)
    if not path.is_absolute() and trainer.log_dir is not None:
        path = Path(trainer.log_dir) / path
    return path
