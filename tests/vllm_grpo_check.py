"""Run by tests/test_vllm_engine.py in its own process (vLLM's CPU backend pins the process's threads).

usage: python vllm_grpo_check.py learn|resume CHECKPOINT DATA_DIR OUT_DIR
- learn: the same GRPO run (a reward learnable within a few steps) with the `policy` engine, with
  the `vllm` engine, and with the `vllm` engine never synced (VLLMWeightSync(every_n_steps=0));
  writes each run's per-step metrics.
- resume: a vLLM-engine run of 4 steps, and the same run resumed from its checkpoint after step 2;
  writes both runs' per-step metrics and the batches they saw.
Prints one JSON line.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch

from lightning_longrl.callbacks import VLLMWeightSync
from lightning_longrl.rl.rollout import PolicyRolloutEngine, SamplingConfig
from lightning_longrl.rl.vllm_engine import VLLMRolloutEngine

from helpers import LEARNABLE_REWARDS, PARITY_REWARDS, MetricsRecorder, SaveEveryBatch, grpo_run  # noqa: E402 (tests/ is on sys.path)

ENGINES = {"policy": PolicyRolloutEngine, "vllm": VLLMRolloutEngine}  # this script's ENGINE argument


def run(out: Path, engine: str, max_steps: int, rewards, lr: float, callbacks=(), ckpt_path=None,
        **data) -> MetricsRecorder:
    recorder = MetricsRecorder()
    trainer, module, datamodule = grpo_run(
        out, Path(sys.argv[2]), Path(sys.argv[3]), max_steps=max_steps,
        module_kwargs={"rewards": rewards, "rollout_engine": ENGINES[engine], "optimizer": lambda p: torch.optim.AdamW(p, lr=lr),
                       "sampling": SamplingConfig(num_samples=8, max_new_tokens=8)},
        trainer_kwargs={"callbacks": [recorder, *callbacks], "logger": False, "max_epochs": 20,
                        "limit_train_batches": 4}, **data,
    )
    L.seed_everything(0)
    trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    return recorder


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[4])
    if mode == "learn":
        # 24 steps: the policy engine reaches 1.0 by step 12; the vLLM run dips around step 11 and its
        # late samples vary between runs (CPU kernels are not bit-reproducible), so 16 steps sat on the edge
        result = {engine: run(out / engine, engine, 24, LEARNABLE_REWARDS, 2e-2).steps for engine in ("policy", "vllm")}
        never = VLLMWeightSync(every_n_steps=0)
        result["vllm_never_synced"] = run(out / "never", "vllm", 6, LEARNABLE_REWARDS, 2e-2, callbacks=[never]).steps
    elif mode == "resume":
        saver = SaveEveryBatch(out / "ckpt")
        full = run(out / "full", "vllm", 4, PARITY_REWARDS, 1e-2, callbacks=[saver])
        resumed = run(out / "resumed", "vllm", 4, PARITY_REWARDS, 1e-2, ckpt_path=str(out / "ckpt" / "batch=2.ckpt"))
        result = {"full": {"steps": full.steps, "batches": full.batches},
                  "resumed": {"steps": resumed.steps, "batches": resumed.batches}}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
