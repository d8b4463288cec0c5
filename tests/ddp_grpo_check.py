"""Run by tests/test_distributed_data.py: GRPO with dynamic sampling on 2 CPU processes (gloo DDP).

usage: python ddp_grpo_check.py CHECKPOINT DATA_DIR OUT_DIR [ENGINE] [SAMPLING]
ENGINE: the rollout engine, ``policy`` (default) or ``vllm`` (one in-process engine per rank).
SAMPLING: ``dynamic`` (default: dynamic sampling, 3 steps) or ``plain`` (no dynamic sampling, 4 steps:
one epoch of 14 questions on 2 ranks in batches of 2).
Writes OUT_DIR/rank<N>.json per rank: {"rank", "steps", "batches", "param_sum", "logprob_diff_max",
"trimmed_questions"} and, from rank 0's trainer, OUT_DIR/last.ckpt.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch

from lightning_longrl import GRPOModule
from lightning_longrl.datamodules import LongVideoDataModule
from lightning_longrl.models.config import ModelConfig
from lightning_longrl.rl.rollout import PolicyRolloutEngine, SamplingConfig
from lightning_longrl.rl.vllm_engine import VLLMRolloutEngine
from lightning_longrl.stages.grpo import DynamicSamplingConfig

from helpers import PARITY_REWARDS, MetricsRecorder  # noqa: E402  (tests/ is this script's folder)

ENGINES = {"policy": PolicyRolloutEngine, "vllm": VLLMRolloutEngine}  # this script's ENGINE argument


def main() -> None:
    checkpoint, data_dir, out_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    engine = sys.argv[4] if len(sys.argv) > 4 else "policy"
    dynamic = (sys.argv[5] if len(sys.argv) > 5 else "dynamic") == "dynamic"
    recorder = MetricsRecorder()
    module = GRPOModule(
        ModelConfig(path=checkpoint), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2), rewards=PARITY_REWARDS,
        sampling=SamplingConfig(num_samples=2, max_new_tokens=8),
        dynamic_sampling=DynamicSamplingConfig(enabled=dynamic, max_tries=2), rollout_engine=ENGINES[engine],
    )
    data = LongVideoDataModule(train_file=str(data_dir / "train.jsonl"), num_frames=4, max_pixels=56 * 56, batch_size=2,
                               num_workers=0)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=3 if dynamic else 4, max_epochs=5,
                        default_root_dir=str(out_dir), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(module, data)
    trainer.save_checkpoint(out_dir / "last.ckpt")
    param_sum = float(sum(p.double().sum() for p in module.model.parameters()))
    result = {"rank": trainer.global_rank, "steps": trainer.global_step, "batches": len(recorder.batches),
              "param_sum": param_sum,
              "logprob_diff_max": max(s.get("rollout/logprob_diff_max", 0.0) for s in recorder.steps),
              "trimmed_questions": sum(s.get("data/trimmed_questions", 0.0) for s in recorder.steps)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
