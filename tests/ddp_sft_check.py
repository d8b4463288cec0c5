"""Run by tests/test_distributed_data.py: SFT on 2 CPU processes (gloo) with unreadable videos.

usage: python ddp_sft_check.py CHECKPOINT DATA_DIR OUT_DIR MAX_BAD_VIDEOS
Writes OUT_DIR/rank<N>.json per rank: {"rank", "empty_steps" (batch indices), "steps", "skipped_total"}.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch

from lightning_longrl import SFTModule
from lightning_longrl.datamodules import LongVideoDataModule
from lightning_longrl.models.config import ModelConfig


class CountEmpty(L.Callback):
    def __init__(self) -> None:
        self.empty: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if len(batch) == 0:
            self.empty.append(batch_idx)


def main() -> None:
    checkpoint, data_dir, out_dir, max_bad = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    counter = CountEmpty()
    module = SFTModule(ModelConfig(path=checkpoint), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    data = LongVideoDataModule(train_file=f"{data_dir}/train.jsonl", num_frames=4, max_pixels=56 * 56, batch_size=1,
                               num_workers=0, max_bad_videos=max_bad)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, default_root_dir=out_dir,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[counter])
    trainer.fit(module, data)
    # one file per rank: lines printed by two processes to one pipe can interleave
    result = {"rank": trainer.global_rank, "empty_steps": counter.empty, "steps": trainer.global_step,
              "skipped_total": data.bad_videos}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
