#!/usr/bin/env bash
# The GPU check as run on a lent GPU machine, from the repository root (docs/benchmarks.md):
#   benchmarks/gpu_check.sh [more benchmarks/gpu_check.py options]
# It needs torch, transformers, lightning, torchmetrics and numpy only (no PyAV, decord,
# jsonargparse or vLLM) and imports lightning_longrl from this checkout. Results go to
# $OUT/gpu_check.{json,md} when the device tool's $OUT is set, else benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
python -c "import torch, transformers, lightning, torchmetrics, numpy" || {
  echo "gpu_check.sh: a required package is missing (see docs/benchmarks.md, GPU check)" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python benchmarks/gpu_check.py --out "$out/gpu_check" "$@"
