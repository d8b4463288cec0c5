#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: builds the environment on first use,
# writes synthetic long videos and a tiny random Qwen2.5-VL, then runs the paper's pipeline at toy
# scale on CPU: stage 1 (CoT-SFT), stage 2 (GRPO), and a held-out evaluation of the untrained,
# SFT and SFT+GRPO models with per-category accuracy. About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH" TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
run() { echo; echo "+ $*"; "$@"; }
latest() { ls -d "$1"/version_* | sort -t_ -k2 -n | tail -n 1; }
# held-out test of one model folder; metrics go to runs/demo/eval/<name>/test_metrics.json
evaluate() {
  local name=$1 model=$2 log; log=$(mktemp)
  echo; echo "+ lightning-longrl test --config configs/demo/grpo.yaml --model.init_args.model.path $model   ($name)"
  if lightning-longrl test --config configs/demo/grpo.yaml --trainer.logger false \
      --trainer.default_root_dir "runs/demo/eval/$name" --model.init_args.model.path "$model" >"$log" 2>&1; then
    grep -E "test/accuracy |test/format_rate" "$log"; rm -f "$log"
  else cat "$log"; rm -f "$log"; exit 1; fi
}

run lightning-longrl synth --out_dir data/synth
run lightning-longrl tiny-model --out checkpoints/tiny-qwen2_5_vl
evaluate untrained checkpoints/tiny-qwen2_5_vl

echo; echo "Stage 1: CoT-SFT"
run lightning-longrl fit --config configs/demo/sft.yaml
sft=$(latest runs/demo/sft)
evaluate sft "$sft/hf_model"

echo; echo "Stage 2: GRPO, starting from the SFT model"
run lightning-longrl fit --config configs/demo/grpo.yaml --model.init_args.model.path "$sft/hf_model"
grpo=$(latest runs/demo/grpo)
evaluate grpo "$grpo/hf_model"

echo; echo "Held-out accuracy (%) by reasoning category, 48 synthetic questions (chance: 25%):"
echo
lightning-longrl table untrained=runs/demo/eval/untrained/test_metrics.json \
  "SFT=runs/demo/eval/sft/test_metrics.json" "SFT+GRPO=runs/demo/eval/grpo/test_metrics.json" \
  | tee runs/demo/eval/table.md

cat <<MSG

Done. The table is also in runs/demo/eval/table.md.
  TensorBoard : .venv/bin/tensorboard --logdir runs/demo      (SFT: $sft, GRPO: $grpo)
  Checkpoints : $sft/checkpoints/last.ckpt, $grpo/checkpoints/last.ckpt
  HF exports  : $sft/hf_model, $grpo/hf_model
MSG
