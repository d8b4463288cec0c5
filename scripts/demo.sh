#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone, on CPU: the paper's whole pipeline at
# toy scale, each stage one `lightning-longrl` command with its YAML in configs/demo/.
#
#   synthetic long videos -> base model (perception stage) -> CoT-SFT -> difficulty filter
#   -> GRPO (from SFT, and from the base model alone) -> held-out table (the paper's Table 4)
#   -> accuracy against frames for SFT and SFT+GRPO (its Figure 8)
#
# Usage: scripts/demo.sh [--seed N] [--control]
#   --seed N    seed of the data, the model's initialisation and training (default 0); seed 0
#               writes data/demo and runs/demo, seed N data/demo-seedN and runs/demo-seedN
#   --control   also continue SFT for as many steps as GRPO took (the table's control row;
#               benchmarks/learning.py passes it)
# The run's own folders are rebuilt from scratch, so two runs with one seed print the same table.
set -euo pipefail
cd "$(dirname "$0")/.."

seed=0 control=0 smoke=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --seed=*) seed="${1#*=}"; shift ;;
    --control) control=1; shift ;;
    --smoke) smoke=1; shift ;;   # every stage at a few steps on a few videos (tests/test_demo.py)
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "demo.sh: --seed takes a non-negative integer, got '$seed'" >&2; exit 2; }
suffix=$([[ "$seed" == 0 ]] && echo "" || echo "-seed$seed")
DATA="data/demo$suffix" RUNS="runs/demo$suffix" TINY="checkpoints/demo-tiny$suffix"
# --smoke: the same commands at a size that runs in about a minute (checks the wiring, not learning)
S_DATA=() S_FIT=() S_FILTER=() S_EVAL=() FRAMES="[8,16,32,64]" TOP=64
if [[ "$smoke" == 1 ]]; then
  DATA="data/demo-smoke" RUNS="runs/demo-smoke" TINY="checkpoints/demo-tiny-smoke"
  S_DATA=(--num_videos 30 --duration 16 --image_questions 6 --text_questions 6) S_FIT=(--trainer.max_steps 2 --trainer.val_check_interval 1 --trainer.limit_val_batches 1)
  S_FILTER=(--k 2 --max_new_tokens 8 --rl_labels "[easy,medium,hard]") S_EVAL=(--max_new_tokens 8 --num_frames 16) FRAMES="[8,16]" TOP=16
fi

scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH" TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
start=$SECONDS
stage() { echo; echo "== $1   [$(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s]"; }
run() { echo "+ $*"; "$@"; }
# a training stage: fit NAME CONFIG MODEL [extra options]; the export lands in $RUNS/NAME/version_0/hf_model
fit() {
  local name=$1 config=$2 model=$3; shift 3
  run lightning-longrl fit --config "$config" --seed_everything "$seed" --model.init_args.model.path "$model" \
    --trainer.default_root_dir "$RUNS/$name" --trainer.logger.init_args.save_dir "$RUNS" \
    --trainer.logger.init_args.name "$name" --trainer.logger.init_args.version 0 "${S_FIT[@]}" "$@"
}
evaluate() { run lightning-longrl eval --config configs/demo/eval.yaml --data "$DATA/test.jsonl" --model "$1" --output_dir "$2" "${S_EVAL[@]}" | tail -n 3; }
frames() { run lightning-longrl eval-frames --config configs/demo/eval.yaml --data "$DATA/test.jsonl" --frames "$FRAMES" --model "$1" --output_dir "$2" "${S_EVAL[@]}"; }

rm -rf "$RUNS"   # this run's outputs only; the data folder is reused when its settings match
stage "Data: synthetic long videos (seed $seed)"
run lightning-longrl synth --config configs/demo/synth.yaml --out_dir "$DATA" --seed "$seed" "${S_DATA[@]}"
run lightning-longrl tiny-model --config configs/demo/tiny_model.yaml --out "$TINY" --spec.seed "$seed"

stage "Base model: perception stage (dense descriptions, no questions)"
fit perception configs/demo/perception.yaml "$TINY" --data.init_args.train_file "$DATA/captions.jsonl"
base="$RUNS/perception/version_0/hf_model"

stage "Stage 1: CoT-SFT"
fit sft configs/demo/sft.yaml "$base" --data.init_args.train_file "$DATA/train.jsonl" --data.init_args.val_file "$DATA/val.jsonl"
sft="$RUNS/sft/version_0/hf_model"

stage "Difficulty filter: k=8 answers per RL question from the SFT model"
run lightning-longrl filter --config configs/demo/filter.yaml --data "$DATA/rl.jsonl" --model "$sft" --output_dir "$RUNS/filter" \
  --seed "$seed" "${S_FILTER[@]}" | grep -E '"(labels|easy|medium|hard|sft|rl)"' || true

# The RL runs below (and the evaluations after them) do not depend on each other: they run side by
# side, one CPU thread each (two processes with a thread per core each slow each other down many
# times over on a 2-core machine; one thread each takes 1.4x as long as two, for both at once).
# The first of a group shows its progress here; the others log to $RUNS/logs/<name>.log.
stage "Stage 2: GRPO from the SFT model, on the medium questions; beside it, the same RL from the base model (GRPO only)"
grpo_data=(--data.init_args.train_file "$RUNS/filter/rl.jsonl" --data.init_args.val_file "$DATA/val.jsonl")
steps=$(python -c "import yaml; print(yaml.safe_load(open('configs/demo/grpo.yaml'))['trainer']['max_steps'])")
[[ "$smoke" == 1 ]] && steps=2
mkdir -p "$RUNS/logs"
side_pids=() side_names=()
# a failure or Ctrl-C in the foreground stops the background runs too
trap 'for pid in ${side_pids[@]+"${side_pids[@]}"}; do pkill -P "$pid" 2>/dev/null; kill "$pid" 2>/dev/null || true; done' EXIT
beside() {  # beside NAME COMMAND...: run in the background, one thread, output to $RUNS/logs/NAME.log
  local name=$1; shift
  echo "+ (beside, log: $RUNS/logs/$name.log) $*"
  OMP_NUM_THREADS=1 "$@" > "$RUNS/logs/$name.log" 2>&1 &
  side_pids+=($!) side_names+=("$name")
}
wait_beside() {  # wait for every background run; a failure stops the demo with its log's end
  local i failed=0
  for i in "${!side_pids[@]}"; do
    if ! wait "${side_pids[$i]}"; then
      failed=1; echo "demo.sh: ${side_names[$i]} failed; the end of $RUNS/logs/${side_names[$i]}.log:" >&2
      tail -n 30 "$RUNS/logs/${side_names[$i]}.log" >&2
    fi
  done
  side_pids=() side_names=()
  [[ "$failed" == 0 ]] || exit 1
}
beside grpo_only fit grpo_only configs/demo/grpo.yaml "$base" "${grpo_data[@]}"
if [[ "$control" == 1 ]]; then  # the control: as many more SFT steps as GRPO takes
  beside sft_control fit sft_control configs/demo/sft.yaml "$sft" --trainer.max_steps "$steps" \
    --data.init_args.train_file "$DATA/train.jsonl" --data.init_args.val_file "$DATA/val.jsonl"
fi
OMP_NUM_THREADS=1 fit grpo configs/demo/grpo.yaml "$sft" "${grpo_data[@]}"
wait_beside

stage "Held-out evaluation: $(wc -l < "$DATA/test.jsonl") questions about unseen videos, $TOP frames"
beside eval_grpo_frames frames "$RUNS/grpo/version_0/hf_model" "$RUNS/eval/grpo_frames"
beside eval_grpo_only evaluate "$RUNS/grpo_only/version_0/hf_model" "$RUNS/eval/grpo_only"
OMP_NUM_THREADS=1 frames "$sft" "$RUNS/eval/sft_frames"
OMP_NUM_THREADS=1 evaluate "$base" "$RUNS/eval/base"
[[ "$control" == 1 ]] && OMP_NUM_THREADS=1 evaluate "$RUNS/sft_control/version_0/hf_model" "$RUNS/eval/sft_control"
wait_beside
tail -n 7 "$RUNS/logs/eval_grpo_frames.log"

stage "Results"
rows=("Base model=$RUNS/eval/base/results.json" "SFT=$RUNS/eval/sft_frames/frames_$TOP/results.json"
      "GRPO only=$RUNS/eval/grpo_only/results.json" "SFT+GRPO=$RUNS/eval/grpo_frames/frames_$TOP/results.json")
[[ "$control" == 1 ]] && rows+=("SFT + $steps SFT steps (control)=$RUNS/eval/sft_control/results.json")
echo "Held-out accuracy (%) by reasoning category, $TOP frames (chance 25%; Table 4 of the paper):"
lightning-longrl table --stages "${rows[@]}" | tee "$RUNS/table.md"
echo
echo "Accuracy (%) against input frames (Figure 8 of the paper):"
lightning-longrl frames-figure "SFT+GRPO=$RUNS/eval/grpo_frames/frame_scaling.json" \
  "SFT=$RUNS/eval/sft_frames/frame_scaling.json" --out "$RUNS/figure8"

cat <<MSG

Done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s (seed $seed).
  Table       : $RUNS/table.md
  Figure 8    : $RUNS/figure8/frame_scaling.png  (table: $RUNS/figure8/frame_scaling.md)
  TensorBoard : .venv/bin/tensorboard --logdir $RUNS   (GRPO: val/accuracy every 20 steps, rewards, response length)
  Models      : $base (base), $sft (SFT), $RUNS/grpo/version_0/hf_model (SFT+GRPO)
MSG
