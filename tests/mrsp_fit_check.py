"""Run by tests/test_sequence_parallel.py: SFT or GRPO through Lightning with MRSPStrategy or plain DDP.

usage: python mrsp_fit_check.py STAGE CHECKPOINT DATA_DIR OUT_DIR DEVICES SP_SIZE [NUM_NODES]
           [--shard] [--gradient-checkpointing] [--lora] [--momentum M] [--max-steps N] [--batch-size B]
           [--save-every DIR] [--resume CKPT]
STAGE is sft (vision tower trainable, gradients clipped by the Trainer) or grpo (G=4, a reward with spread on a random model).
SP_SIZE 0 means plain DDP; --shard shards the weights (MRSPStrategy(shard_weights=True)); --lora trains
LoRA adapters (rank 4) on the language model, the KL reference being the policy with adapters off; --save-every
writes DIR/batch=<k>.ckpt after every batch, --resume continues from one. With NUM_NODES > 1 start one
such process per node, with NODE_RANK, MASTER_ADDR and MASTER_PORT set (as a cluster launcher would);
DEVICES is per node. Writes OUT_DIR/rank<N>.json per rank: the record ids of each batch, each
step's loss (SFT) or logged metrics (GRPO), a checksum of the trained (full) weights and the number
of parameter elements this rank holds (and the vision tower's, which is never sharded).
"""

import argparse
import json
from pathlib import Path

import lightning as L
import torch
from torch.distributed.tensor import DTensor

from lightning_longrl import GRPOModule, SFTModule
from lightning_longrl.datamodules import LongVideoDataModule
from lightning_longrl.models.config import ModelConfig
from lightning_longrl.models.lora import LoRAConfig
from lightning_longrl.parallel import MRSPStrategy
from lightning_longrl.parallel.weights import full_weights
from lightning_longrl.rl.rollout import SamplingConfig

from helpers import PARITY_REWARDS, SaveEveryBatch  # noqa: E402  (tests/ is this script's folder)


class Record(L.Callback):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.modalities: list[list[str]] = []
        self.losses: list[float] = []
        self.rewards: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches.append([r.id for r in batch.records])
        self.modalities.append([r.modality for r in batch.records])
        if isinstance(outputs, dict) and "loss" in outputs:
            self.losses.append(float(outputs["loss"]))
        else:  # GRPO (manual optimisation) returns nothing; its metrics carry the step's numbers
            metrics = trainer.callback_metrics
            self.losses.append(float(metrics["policy/loss"]))
            self.rewards.append(float(metrics["reward/total_mean"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("stage", "checkpoint", "data_dir", "out_dir"):
        parser.add_argument(name)
    parser.add_argument("devices", type=int)
    parser.add_argument("sp", type=int)
    parser.add_argument("num_nodes", type=int, nargs="?", default=1)
    parser.add_argument("--shard", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--save-every")
    parser.add_argument("--resume")
    args = parser.parse_args()
    stage, checkpoint, out_dir, sp = args.stage, args.checkpoint, Path(args.out_dir), args.sp
    L.seed_everything(0)
    record = Record()
    if stage == "sft":
        module = SFTModule(ModelConfig(path=checkpoint, freeze_vision=False, gradient_checkpointing=args.gradient_checkpointing),
                           optimizer=lambda p: torch.optim.SGD(p, lr=0.5, momentum=args.momentum))
    else:
        lora = LoRAConfig(rank=4) if args.lora else None
        module = GRPOModule(ModelConfig(path=checkpoint, gradient_checkpointing=args.gradient_checkpointing, lora=lora),
                            optimizer=lambda p: torch.optim.SGD(p, lr=0.5, momentum=args.momentum),
                            rewards=PARITY_REWARDS, sampling=SamplingConfig(num_samples=4, max_new_tokens=8))
    data = LongVideoDataModule(train_file=f"{args.data_dir}/train.jsonl", num_frames=12, max_pixels=56 * 56, batch_size=args.batch_size,
                               num_workers=0)
    strategy = MRSPStrategy(sp_size=sp, shard_weights=args.shard) if sp else "ddp"
    trainer = L.Trainer(accelerator="cpu", devices=args.devices, num_nodes=args.num_nodes, strategy=strategy,
                        max_steps=args.max_steps, gradient_clip_val=1.0 if stage == "sft" else None, default_root_dir=str(out_dir),
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[record] + ([SaveEveryBatch(Path(args.save_every))] if args.save_every else []))
    trainer.fit(module, data, ckpt_path=args.resume)
    checksum = float(sum(w.double().sum() for _, w in full_weights(module.model, module)))  # gathered when sharded
    trainable = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in module.model.parameters()
                    if p.requires_grad)
    held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in module.model.parameters())
    vision = sum(p.numel() for p in module.model.vision_tower.parameters())  # replicated also when sharding
    from lightning_longrl.models.video_lm import VideoLanguageModel

    start = float(sum(p.detach().double().sum() for p in VideoLanguageModel.from_pretrained(checkpoint).parameters()))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(
        {"rank": trainer.global_rank, "batches": record.batches, "modalities": record.modalities,
         "losses": record.losses, "rewards": record.rewards,
         "checksum": checksum, "start_checksum": start, "held": held, "trainable": trainable,
         "vision": vision}))


if __name__ == "__main__":
    main()
