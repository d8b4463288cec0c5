"""The tiny checkpoints are servable by vLLM's CPU build, fed cached video embeddings.

vLLM is part of the test environment (scripts/setup_env.sh); a missing vLLM fails this test.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("vllm_greedy_check.py")


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl"])
def test_vllm_greedy_from_cached_embeddings_equals_ours(arch, tiny_checkpoints, synth_dir):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tiny_checkpoints[arch]), str(synth_dir)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["prompt_tokens"] == result["our_prompt_tokens"]  # same placeholder expansion
    assert len(result["vllm"]) > 0
    assert result["vllm"] == result["ours"][: len(result["vllm"])]
