"""Run by tests/test_sequence_parallel.py: SFT through Lightning with MRSPStrategy or plain DDP.

usage: python mrsp_sft_check.py CHECKPOINT DATA_DIR OUT_DIR DEVICES SP_SIZE [NUM_NODES]
SP_SIZE 0 means plain DDP. With NUM_NODES > 1 start one such process per node, with NODE_RANK,
MASTER_ADDR and MASTER_PORT set (as a cluster launcher would); DEVICES is per node. Writes OUT_DIR/rank<N>.json per rank: the record ids of each batch,
each step's loss, and a checksum of the trained weights.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch

from lightning_longrl import SFTModule
from lightning_longrl.datamodules import LongVideoDataModule
from lightning_longrl.models.config import ModelConfig
from lightning_longrl.parallel import MRSPStrategy


class Record(L.Callback):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches.append([r.id for r in batch.records])
        self.losses.append(float(outputs["loss"]))


def main() -> None:
    checkpoint, data_dir, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    devices, sp = int(sys.argv[4]), int(sys.argv[5])
    num_nodes = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    L.seed_everything(0)
    record = Record()
    module = SFTModule(ModelConfig(path=checkpoint, freeze_vision=False),
                       optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    data = LongVideoDataModule(train_file=f"{data_dir}/train.jsonl", num_frames=12, max_pixels=56 * 56, batch_size=1,
                               num_workers=0)
    strategy = MRSPStrategy(sp_size=sp) if sp else "ddp"
    trainer = L.Trainer(accelerator="cpu", devices=devices, num_nodes=num_nodes, strategy=strategy, max_steps=3, default_root_dir=str(out_dir),
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[record])
    trainer.fit(module, data)
    checksum = float(sum(p.detach().double().sum() for p in module.model.parameters()))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(
        {"rank": trainer.global_rank, "batches": record.batches, "losses": record.losses, "checksum": checksum}))


if __name__ == "__main__":
    main()
