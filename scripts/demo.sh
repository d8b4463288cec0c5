#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: builds the environment on first use,
# writes synthetic long videos and a tiny random Qwen2.5-VL, runs stage 1 (CoT-SFT) on CPU and
# evaluates on the held-out split before and after training. A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH" TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
run() { echo; echo "+ $*"; "$@"; }
# the test loop's metric table only (the full log is shown if the command fails)
evaluate() {
  echo; echo "+ lightning-longrl test $*"
  local log; log=$(mktemp)
  if lightning-longrl test "$@" >"$log" 2>&1; then grep -E "test/" "$log"; rm -f "$log"; else cat "$log"; rm -f "$log"; exit 1; fi
}

run lightning-longrl synth --out_dir data/synth
run lightning-longrl tiny-model --out checkpoints/tiny-qwen2_5_vl
echo; echo "Held-out accuracy of the untrained model:"
evaluate --config configs/demo/sft.yaml --trainer.logger false
run lightning-longrl fit --config configs/demo/sft.yaml
latest=$(ls -d runs/demo/sft/version_* | sort -t_ -k2 -n | tail -n 1)
echo; echo "Held-out accuracy after CoT-SFT:"
evaluate --config configs/demo/sft.yaml --trainer.logger false --ckpt_path "$latest/checkpoints/last.ckpt"

cat <<MSG

Done. Held-out accuracy is printed above for the untrained model and after CoT-SFT.
  TensorBoard : .venv/bin/tensorboard --logdir runs/demo      (run: $latest)
  Checkpoint  : $latest/checkpoints/last.ckpt
  HF export   : $latest/hf_model
MSG
