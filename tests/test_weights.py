"""full_weights: the policy's weights by Hugging Face name, as the vLLM weight sync sends them."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from lightning_longrl.parallel.weights import full_weights, is_sharded

from helpers import free_port


def test_unsharded_weights_are_the_parameters_themselves(loaded_models):
    model = loaded_models["qwen2_5_vl"]
    params = dict(model.hf.named_parameters())
    got = dict(full_weights(model.hf, root=torch.nn.ModuleDict({"model": model})))
    assert sorted(got) == sorted(params)
    assert all(got[k].data_ptr() == params[k].data_ptr() for k in params), "no copy without sharding"
    assert not is_sharded(model)


def test_fsdp_shards_are_gathered_into_full_tensors(tmp_path, tiny_checkpoints):
    """Two gloo processes shard the model with FSDP2; every rank gathers the exact full weights."""
    script = Path(__file__).with_name("fsdp_weights_check.py")
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), str(script),
                           str(tiny_checkpoints["qwen2_vl"])],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in rows) == [0, 1]
    for r in rows:
        assert r["sharded"] and r["local_smaller"], "the model was not sharded; the check is void"
        assert r["same_names"] and r["max_diff"] == 0.0
