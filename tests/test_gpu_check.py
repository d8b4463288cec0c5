"""benchmarks/gpu_check.py end to end at a toy shape on CPU, so the GPU machine's script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_at_toy_shape_on_cpu(tmp_path):
    out = tmp_path / "gpu_check"
    cmd = [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--shape", "toy", "--device", "cpu", "--frames", "4", "8",
           "--max-fit-frames", "16", "--grpo-frames", "4", "--side", "56", "--response-tokens", "6", "--group", "4",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["shape"] == "toy" and result["dtype"] == "float32" and result["parameters_billion"] > 0
    assert result["attention"] == {"vision": "flash_packed_sdpa", "language": "sdpa_gqa"}
    sft = {r["frames"]: r for r in result["sft"]}
    assert list(sft) == [4, 8, 16], "the listed counts, then doubling up to --max-fit-frames"
    for frames, row in sft.items():
        assert row["status"] == "ok" and row["seconds"] > 0 and row["loss"] > 0
        assert row["video_tokens"] == frames // 2 * 4, "56x56 frames: four merged tokens per frame pair"
    assert result["largest_fit_frames"] == 16
    grpo = {r["setting"]: r for r in result["grpo"]}
    assert set(grpo) == {"cache+shared prefill", "no cache, no shared prefill"}
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in grpo.values())
    # the cache encodes the question's video once; without it every rollout and pass re-encodes it
    assert grpo["cache+shared prefill"]["encoded_videos"] == 1
    assert grpo["no cache, no shared prefill"]["encoded_videos"] > 1
    assert {"rollout", "reference", "update"} <= set(grpo["cache+shared prefill"]["phases"])
    assert result["grpo_speedup"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| 16 frames |" in table and "Cache + shared prefill" in table
