"""Small builders shared by the training tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L

from lightning_longrl import SFTModule
from lightning_longrl.datamodules import LongVideoDataModule
from lightning_longrl.models.config import ModelConfig


def sft_run(tmp_path: Path, checkpoint: Path, data_dir: Path, *, max_steps: int = 3, freeze_vision: bool = True,
            trainer_kwargs: dict | None = None, **data_kwargs):
    """A CPU trainer, an SFT module on a tiny checkpoint, and a data module on synthetic data."""
    module = SFTModule(
        ModelConfig(path=str(checkpoint), freeze_vision=freeze_vision),
        optimizer=lambda params: __import__("torch").optim.AdamW(params, lr=1e-2),
    )
    data = LongVideoDataModule(**{
        "train_file": str(data_dir / "train.jsonl"), "val_file": str(data_dir / "val.jsonl"),
        "num_frames": 8, "max_pixels": 56 * 56, "batch_size": 2, "num_workers": 0, **data_kwargs,
    })
    trainer = L.Trainer(**{
        "accelerator": "cpu", "devices": 1, "max_steps": max_steps, "default_root_dir": str(tmp_path),
        "logger": L.pytorch.loggers.TensorBoardLogger(str(tmp_path), name="logs"),
        "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
        "limit_val_batches": 1, "log_every_n_steps": 1, **(trainer_kwargs or {}),
    })
    return trainer, module, data


def copy_dataset_with(data_dir: Path, out: Path, replace_videos: dict[int, str]) -> Path:
    """Copy a synthetic dataset's records, pointing the given train rows at other video paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()]
    for index, video in replace_videos.items():
        rows[index]["video"] = video
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(data_dir / "val.jsonl", out / "val.jsonl")
    if not (out / "videos").exists():
        (out / "videos").symlink_to(data_dir / "videos")
    return out
