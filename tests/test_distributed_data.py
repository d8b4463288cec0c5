"""Unreadable videos in a 2-process (gloo) data-parallel run: no rank hangs, the limit is global."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_dataset_with

pytestmark = pytest.mark.slow  # multi-process, notebook or end-to-end runs: not in the fast lane

SCRIPT = Path(__file__).with_name("ddp_sft_check.py")


def run(checkpoint, data_dir, out, max_bad):
    return subprocess.run([sys.executable, str(SCRIPT), str(checkpoint), str(data_dir), str(out), str(max_bad)],
                          capture_output=True, text=True, timeout=300)


def test_empty_batch_on_one_rank_does_not_hang_the_other(tmp_path, tiny_checkpoints, synth_dir):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"no video here" * 40)
    data_dir = copy_dataset_with(synth_dir, tmp_path / "data", {1: str(broken), 6: str(broken)})
    proc = run(tiny_checkpoints["qwen2_vl"], data_dir, tmp_path / "run", max_bad=5)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 7  # 14 samples, 2 ranks, batch size 1
    assert sum(len(r["empty_steps"]) for r in ranks) == 2  # each bad sample emptied one step on one rank
    # the case that used to hang: a step where one rank had no sample and the other had one
    assert set(ranks[0]["empty_steps"]) ^ set(ranks[1]["empty_steps"])


def test_bad_video_limit_counts_all_ranks_and_stops_them_together(tmp_path, tiny_checkpoints, synth_dir):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"no video here" * 40)
    data_dir = copy_dataset_with(synth_dir, tmp_path / "data", {i: str(broken) for i in (0, 1, 2, 3)})
    proc = run(tiny_checkpoints["qwen2_vl"], data_dir, tmp_path / "run", max_bad=2)
    assert proc.returncode != 0
    assert "BadVideoLimitError" in proc.stderr and "more than max_bad_videos=2" in proc.stderr


def test_grpo_with_dynamic_sampling_keeps_ranks_in_step(tmp_path, tiny_checkpoints, synth_dir):
    """Two processes sample, filter and buffer different groups, yet update together (same weights
    afterwards), and a checkpoint keeps each rank's own sampling state."""
    import torch

    script = Path(__file__).with_name("ddp_grpo_check.py")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), str(tiny_checkpoints["qwen2_vl"]), str(synth_dir), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3
    assert ranks[0]["batches"] == ranks[1]["batches"] >= 3
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"]
    state = torch.load(out / "last.ckpt", weights_only=True)["grpo"]["ranks"]
    assert len(state) == 2
    assert not torch.equal(state[0]["generator"], state[1]["generator"]), "ranks must sample differently"


def test_grpo_trims_every_rank_to_the_readable_questions_of_the_fewest(tmp_path, tiny_checkpoints, synth_dir):
    """One unreadable video: in the step it lands in, its rank has one question fewer than the other
    (which used to stop the run); the other rank trims its batch to match, counts it, and both ranks
    update together to the same weights."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"no video here" * 40)
    data_dir = copy_dataset_with(synth_dir, tmp_path / "data", {3: str(broken)})
    script = Path(__file__).with_name("ddp_grpo_check.py")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), str(tiny_checkpoints["qwen2_vl"]), str(data_dir), str(out), "policy",
                           "plain"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4  # one epoch: every question, the broken one included, was drawn
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"]
    assert ranks[0]["trimmed_questions"] + ranks[1]["trimmed_questions"] == 1
