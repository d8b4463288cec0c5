#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds the environment on first use (torch,
# torchvision, transformers, the CPU build of vLLM, decord, PyAV, ...) and runs pytest.
# Lint first (ruff: errors, import order, upgrades; under a second), then pytest; extra arguments
# go to pytest. pytest's exit code is kept (5, "no tests collected", fails too).
# Everyday fast lane: scripts/test.sh -m "not slow" (the multi-process, notebook and demo runs are slow).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup_env.sh
export TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check . || { echo "scripts/test.sh: ruff found the problems above (ruff check --fix . fixes the import order)" >&2; exit 1; }
exec .venv/bin/python -m pytest "$@"
