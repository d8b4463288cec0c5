#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds the environment on first use (torch,
# torchvision, transformers, the CPU build of vLLM, decord, PyAV, ...) and runs pytest.
# Extra arguments go to pytest. pytest's exit code is kept (5, "no tests collected", fails too).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup_env.sh
export TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
