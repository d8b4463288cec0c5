"""Run by tests/test_sequence_parallel.py: SFT or GRPO through Lightning with MRSPStrategy or plain DDP.

usage: python mrsp_fit_check.py STAGE CHECKPOINT DATA_DIR OUT_DIR DEVICES SP_SIZE [NUM_NODES]
STAGE is sft (vision tower trainable) or grpo (G=4, a reward with spread on a random model).
SP_SIZE 0 means plain DDP. With NUM_NODES > 1 start one such process per node, with NODE_RANK,
MASTER_ADDR and MASTER_PORT set (as a cluster launcher would); DEVICES is per node. Writes OUT_DIR/rank<N>.json per rank: the record ids of each batch,
each step's loss (SFT) or logged metrics (GRPO), and a checksum of the trained weights.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch

from helpers import PARITY_REWARDS  # noqa: E402  (tests/ is this script's folder)
from lightning_longrl import GRPOModule, SFTModule
from lightning_longrl.datamodules import LongVideoDataModule
from lightning_longrl.models.config import ModelConfig
from lightning_longrl.parallel import MRSPStrategy
from lightning_longrl.rl.rollout import SamplingConfig


class Record(L.Callback):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.losses: list[float] = []
        self.rewards: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches.append([r.id for r in batch.records])
        if isinstance(outputs, dict) and "loss" in outputs:
            self.losses.append(float(outputs["loss"]))
        else:  # GRPO (manual optimisation) returns nothing; its metrics carry the step's numbers
            metrics = trainer.callback_metrics
            self.losses.append(float(metrics["policy/loss"]))
            self.rewards.append(float(metrics["reward/total_mean"]))


def main() -> None:
    stage, checkpoint, data_dir, out_dir = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    devices, sp = int(sys.argv[5]), int(sys.argv[6])
    num_nodes = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    L.seed_everything(0)
    record = Record()
    if stage == "sft":
        module = SFTModule(ModelConfig(path=checkpoint, freeze_vision=False),
                           optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    else:
        module = GRPOModule(ModelConfig(path=checkpoint), optimizer=lambda p: torch.optim.SGD(p, lr=0.5),
                            rewards=PARITY_REWARDS, sampling=SamplingConfig(num_samples=4, max_new_tokens=8))
    data = LongVideoDataModule(train_file=f"{data_dir}/train.jsonl", num_frames=12, max_pixels=56 * 56, batch_size=1,
                               num_workers=0)
    strategy = MRSPStrategy(sp_size=sp) if sp else "ddp"
    trainer = L.Trainer(accelerator="cpu", devices=devices, num_nodes=num_nodes, strategy=strategy, max_steps=3, default_root_dir=str(out_dir),
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[record])
    trainer.fit(module, data)
    checksum = float(sum(p.detach().double().sum() for p in module.model.parameters()))
    from lightning_longrl.models.video_lm import VideoLanguageModel

    start = float(sum(p.detach().double().sum() for p in VideoLanguageModel.from_pretrained(checkpoint).parameters()))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(
        {"rank": trainer.global_rank, "batches": record.batches, "losses": record.losses, "rewards": record.rewards,
         "checksum": checksum, "start_checksum": start}))


if __name__ == "__main__":
    main()
