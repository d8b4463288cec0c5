"""MR-SP building blocks on 2 and 4 CPU processes (gloo): parallel video encoding and
sequence-parallel prefill (Ulysses attention) match the single-process computation.

Covered: Qwen2-VL, Qwen2.5-VL and Qwen3-VL (deepstack features split with the sequence), an odd
sequence length (padding to a multiple of the group), frame counts that do not divide over the
group (padded, then dropped), a group larger than the number of KV heads (replicated), and two
data-parallel groups of two sequence-parallel ranks. The Lightning runs train on batches mixing
videos, images and text-only questions.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import free_port, mrsp_fit_run

pytestmark = pytest.mark.slow  # multi-process, notebook or end-to-end runs: not in the fast lane

SCRIPT = Path(__file__).with_name("sp_check.py")


CASES = {
    "sp2-qwen2_5_vl-odd-length": (2, 2, "qwen2_5_vl", 16),
    "sp4-qwen2_5_vl-more-ranks-than-kv-heads-padded-frames": (4, 4, "qwen2_5_vl", 12),
    "dp2xsp2-qwen2_vl": (4, 2, "qwen2_vl", 12),
    "sp4-qwen3_vl-deepstack-padded-frames": (4, 4, "qwen3_vl", 12),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_sequence_parallel_matches_single_process(case, tmp_path, tiny_checkpoints, synth_dir):
    procs, sp, arch, frames = CASES[case]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(SCRIPT), str(tiny_checkpoints[arch]), str(synth_dir), str(sp),
         str(frames)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in rows) == list(range(procs))
    for r in rows:
        assert r["local_length"] * sp == r["padded"] >= r["length"]
        # frames split across ranks must give the same embeddings; not always to the bit: a rank's
        # vision-tower matmuls run over fewer rows, and CPU kernels picked by shape may round the
        # same row differently (1.3e-7 seen with the half-flash synthetic videos; 0.0 before)
        assert r["embeds"] <= 1e-6, "frames split across ranks must give the same embeddings"
        assert r["deepstack"] <= 1e-6 and (r["deepstack_levels"] > 0) == (arch == "qwen3_vl")
        assert r["logprobs"] <= 1e-5 and r["entropy"] <= 1e-5
        assert r["loss"] <= 1e-5
        assert r["grads"] <= 1e-5 * max(1.0, r["grad_scale"])
        assert r["left_padded"], "the prompt batch must be left-padded to exercise the attention mask"
        assert r["left_padded_logprobs"] <= 1e-5
    if case.startswith("sp2"):
        assert rows[0]["length"] % sp == 1, "the case must exercise sequence padding"
    if case.startswith("sp4"):
        assert rows[0]["kv_heads"] < sp, "the case must exercise KV-head replication"
        assert (frames // 2) % sp, "the case must exercise frame padding"


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, tiny_checkpoints, mixed_dir):
    """``ddp_runs(stage)``: plain DDP on 2 processes, the reference of the MRSPStrategy runs (run
    once per stage), on data mixing videos, images and text-only questions. Its ranks hold
    different media: the checks below need a step where one rank's question is text-only (no
    vision tower runs) while the other's is a video."""
    runs: dict[str, list[dict]] = {}

    def run(stage: str) -> list[dict]:
        if stage not in runs:
            runs[stage] = mrsp_fit_run(tmp_path_factory.mktemp(f"ddp_{stage}"), tiny_checkpoints["qwen2_5_vl"],
                                         mixed_dir, devices=2, sp=0, stage=stage)
            seen = {m for row in runs[stage] for step in row["modalities"] for m in step}
            assert seen == {"video", "image", "text"}, f"the run must mix every kind of question, saw {seen}"
            pairs = zip(runs[stage][0]["modalities"], runs[stage][1]["modalities"])
            assert any({a[0], b[0]} == {"text", "video"} for a, b in pairs), "no step with text-only beside a video"
        return runs[stage]

    return run


VARIANTS = {  # MRSPStrategy options of each run compared with plain DDP
    "sft-replicated": ("sft", ()),
    "sft-sharded-gradient-checkpointing": ("sft", ("--shard", "--gradient-checkpointing")),  # one run for both (CI time)
    "grpo-replicated": ("grpo", ()),
    "grpo-sharded-gradient-checkpointing": ("grpo", ("--shard", "--gradient-checkpointing")),
}


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_mrsp_strategy_matches_plain_ddp(tmp_path, tiny_checkpoints, mixed_dir, ddp_runs, variant):
    """Lightning with MRSPStrategy(sp_size=2) on 4 processes trains exactly like DDP on 2: each
    sequence-parallel pair sees one DDP rank's batches (and in GRPO samples its rollouts, seeded by
    data-parallel rank), with the same losses and the same weights afterwards. SFT trains the vision
    tower, so gradients also flow through the parallel encoding; GRPO scores sequence-parallel in
    the old-policy, reference and update passes. With ``shard_weights`` (FSDP2 over the 4 ranks)
    each rank holds a quarter of the weights; with gradient checkpointing the layers recomputed in
    backward run sequence-parallel again. The data mix videos, images and text-only questions
    (see ``ddp_runs``): a rank with a text-only question beside one with a video must not hang, and
    with the trainable tower of SFT must still reduce its (zero) vision gradients."""
    stage, options = VARIANTS[variant]
    mrsp = mrsp_fit_run(tmp_path / "mrsp", tiny_checkpoints["qwen2_5_vl"], mixed_dir, 4, 2, stage, *options)
    ddp = ddp_runs(stage)
    for rank, row in enumerate(mrsp):
        twin = ddp[rank // 2]
        assert row["batches"] == twin["batches"], "a sequence-parallel pair must see its data-parallel rank's samples"
        assert row["rewards"] == twin["rewards"], "a pair must sample its DDP rank's rollouts"
        assert row["losses"] == pytest.approx(twin["losses"], abs=1e-5)
        assert row["checksum"] == pytest.approx(twin["checksum"], rel=1e-6)
        if "--shard" in options:
            decoder, mine = twin["held"] - twin["vision"], row["held"] - row["vision"]
            assert decoder / 4 <= mine < decoder / 4 + 2000, "each rank must hold ~1/4 of the language model"
        else:
            assert row["held"] == twin["held"]
    assert mrsp[0]["batches"] != mrsp[2]["batches"], "the two data-parallel groups must see different samples"
    assert abs(ddp[0]["checksum"] - ddp[0]["start_checksum"]) > 1e-3, "training must move the weights"


def test_two_nodes_on_loopback_train_like_one(tmp_path, tiny_checkpoints, mixed_dir, ddp_runs):
    """num_nodes=2: two node processes (NODE_RANK 0 and 1, as SLURM or torchrun would start them on
    two machines), each launching 2 local ranks, train with sequence-parallel pairs exactly like
    plain DDP on 2 processes."""
    import os

    checkpoint = tiny_checkpoints["qwen2_5_vl"]
    script = Path(__file__).with_name("mrsp_fit_check.py")
    out, port = tmp_path / "nodes", free_port()
    nodes = [
        subprocess.Popen([sys.executable, str(script), "sft", str(checkpoint), str(mixed_dir), str(out), "2", "2", "2"],
                         cwd=Path(__file__).parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "NODE_RANK": str(node), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        for node in (0, 1)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-4000:]
    rows = [json.loads((out / f"rank{r}.json").read_text()) for r in range(4)]
    ddp = ddp_runs("sft")
    for rank, row in enumerate(rows):
        assert row["batches"] == ddp[rank // 2]["batches"]
        assert row["losses"] == pytest.approx(ddp[rank // 2]["losses"], abs=1e-5)
        assert row["checksum"] == pytest.approx(ddp[0]["checksum"], rel=1e-6)


def test_sharded_checkpoint_resumes_exactly(tmp_path, tiny_checkpoints, synth_dir):
    """With sharded weights a checkpoint holds full tensors (model and SGD momentum): resuming it
    on the 4 sharded ranks continues exactly like the uninterrupted run, and the checkpoint loads
    into a plain single-process module."""
    import torch
    from torch.distributed.tensor import DTensor

    from lightning_longrl import SFTModule
    from lightning_longrl.models.config import ModelConfig

    checkpoint = tiny_checkpoints["qwen2_5_vl"]
    whole = mrsp_fit_run(tmp_path / "whole", checkpoint, synth_dir, 4, 2, "sft", "--shard", "--momentum", "0.9",
                           "--max-steps", "3", "--save-every", str(tmp_path / "ckpt"))
    saved = tmp_path / "ckpt" / "batch=2.ckpt"
    resumed = mrsp_fit_run(tmp_path / "resumed", checkpoint, synth_dir, 4, 2, "sft", "--shard", "--momentum", "0.9",
                             "--max-steps", "3", "--resume", str(saved))
    for rank in range(4):
        assert resumed[rank]["batches"] == whole[rank]["batches"][2:]
        assert resumed[rank]["losses"] == pytest.approx(whole[rank]["losses"][2:], abs=1e-6)
        assert resumed[rank]["checksum"] == pytest.approx(whole[rank]["checksum"], rel=1e-9)
    state = torch.load(saved, map_location="cpu", weights_only=False)
    assert state["optimizer_states"][0]["state"], "the momentum buffers must be saved"
    plain = SFTModule(ModelConfig(path=checkpoint))
    plain.configure_model()
    plain.load_state_dict(state["state_dict"])  # full tensors, every key
    assert all(not isinstance(v, DTensor) for v in state["state_dict"].values())

