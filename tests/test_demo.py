"""The main job's wiring: ``scripts/demo.sh --smoke`` runs every stage of the pipeline (synth,
tiny-model, perception, CoT-SFT, filter, GRPO from SFT and from the base model, the extra-SFT
control, evaluation, the table and the frame-scaling figure) at a few steps on a few videos, each
command taking the previous one's output. Whether the pipeline *learns* is benchmarks/learning.py's
question, not a test's."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # multi-process, notebook or end-to-end runs: not in the fast lane

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = [REPO / "data/demo-smoke", REPO / "runs/demo-smoke", REPO / "checkpoints/demo-tiny-smoke"]


def test_demo_pipeline_runs_end_to_end():
    for path in OUTPUTS:
        shutil.rmtree(path, ignore_errors=True)
    try:
        done = subprocess.run([str(REPO / "scripts/demo.sh"), "--smoke", "--control"], cwd=REPO, capture_output=True,
                              text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        runs = REPO / "runs/demo-smoke"
        table = (runs / "table.md").read_text()
        for row in ("Base model", "SFT", "GRPO only", "SFT+GRPO", "control"):
            assert f"| {row}" in table or row in table
        assert "| SFT+GRPO | ✓ | ✓ |" in table and "| GRPO only | ✗ | ✓ |" in table
        # each stage consumed the previous one's export
        grpo = json.loads((runs / "grpo/version_0/hf_model/config.json").read_text())
        assert grpo["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
        assert (runs / "filter/summary.json").is_file() and (runs / "filter/rl.jsonl").is_file()
        assert "runs/demo-smoke/sft/version_0/hf_model" in (runs / "grpo/version_0/hparams.yaml").read_text()
        study = json.loads((runs / "eval/grpo_frames/frame_scaling.json").read_text())
        assert study["frames"] == [8, 16]
        assert (runs / "figure8/frame_scaling.png").stat().st_size > 1000
        assert list((runs / "grpo").glob("version_0/events.out.tfevents.*"))
        assert "Done in" in done.stdout and "Table" in done.stdout
    finally:
        for path in OUTPUTS:
            shutil.rmtree(path, ignore_errors=True)
