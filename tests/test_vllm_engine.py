"""The vLLM rollout engine on CPU, for real: agreement with the trainer, weight sync, GRPO runs.

vLLM is part of the test environment (scripts/setup_env.sh): a missing vLLM fails these tests.
Everything that starts vLLM runs in a subprocess, because vLLM's CPU backend pins the threads of
the process it runs in.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_longrl.callbacks import VLLMWeightSync
from lightning_longrl.models.config import ModelConfig
from lightning_longrl.rl.vllm_engine import VLLMRolloutEngine
from lightning_longrl.stages.grpo import GRPOModule

pytestmark = pytest.mark.slow  # multi-process, notebook or end-to-end runs: not in the fast lane

HERE = Path(__file__).parent


def _run(script: str, *args, timeout: int = 600) -> dict | None:
    """Run a script of tests/ in its own process; its last stdout line, read as JSON, if any."""
    proc = subprocess.run([sys.executable, str(HERE / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=HERE)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None


def test_vllm_is_installed():
    assert importlib.util.find_spec("vllm") is not None, "vLLM belongs to the test environment: run scripts/setup_env.sh"


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_vllm_engine_agrees_with_the_trainer(arch, tiny_checkpoints, mixed_dir):
    """Cached embeddings of a video, one image, two images and a text-only question in, the
    trainer's numbers out: same prompt, same greedy tokens, sampling log-probs equal to the
    trainer's; a training step breaks the agreement until the weights sync."""
    r = _run("vllm_engine_check.py", tiny_checkpoints[arch], mixed_dir)
    assert r["kinds"] == ["video", "image1", "image2", "text"]
    assert r["prompt_tokens"] == r["our_prompt_tokens"], "vLLM expanded the vision placeholders differently"
    assert all(r["prompt_ids_equal"]), "vLLM rebuilt a prompt (Qwen3-VL: its timestamp text) with other tokens"
    assert r["greedy_vllm"] == r["greedy_ours"]
    assert r["rows"] == 16 and r["generated_tokens"] > 0 and r["banned_sampled"] == 0
    assert r["gap_before"] <= 1e-5
    assert r["gap_without_sync"] > 1e-2, "the step did not change what the trainer computes; the check is void"
    assert r["gap_after_sync"] <= 1e-5
    assert r["gap_lora_without_sync"] > 1e-2, "the moved adapters did not change the trainer; the LoRA check is void"
    assert r["gap_lora_merged"] <= 1e-5, "LoRA: the engine fed the merged weights samples as the adapted policy scores"
    assert r["same_seed_same_tokens"] and r["other_seed_other_tokens"]
    assert r["builds"] == 1


def _rewards(steps: list[dict]) -> list[float]:
    return [s["reward/total_mean"] for s in steps]


def test_grpo_with_vllm_learns_like_the_policy_engine(tmp_path, tiny_checkpoints, synth_dir):
    runs = _run("vllm_grpo_check.py", "learn", tiny_checkpoints["qwen2_5_vl"], synth_dir, tmp_path)
    never = runs.pop("vllm_never_synced")
    for engine, steps in runs.items():
        rewards = _rewards(steps)
        assert sum(rewards[:3]) / 3 < 0.8, f"{engine}: the reward starts too high for the test to show learning"
        assert sum(rewards[-4:]) / 4 >= 0.9, f"{engine} did not learn: {rewards}"
    vllm = runs["vllm"]
    # the recorder reads a step's metrics before the sync of that step is logged
    assert all("time/weight_sync" in s for s in vllm[1:]), "VLLMWeightSync was not added or did not sync every step"
    assert max(s["rollout/logprob_diff_max"] for s in vllm) <= 1e-4
    # without the sync the engine keeps sampling from the starting weights
    assert "time/weight_sync" not in never[-1]
    assert never[-1]["rollout/logprob_diff_max"] > 1e-2


def test_grpo_with_vllm_resumes_exactly(tmp_path, tiny_checkpoints, mixed_dir):
    """GRPO with the vLLM engine on batches mixing videos, images and text-only questions, and
    the same run resumed from its checkpoint after step 2: the same steps, number for number."""
    r = _run("vllm_grpo_check.py", "resume", tiny_checkpoints["qwen2_5_vl"], mixed_dir, tmp_path)
    full, resumed = r["full"], r["resumed"]
    seen = {i.split("-")[2] if i.count("-") == 3 else "video" for batch in full["batches"] for i in batch}
    assert seen == {"video", "img", "txt"}, f"the run must mix every kind of question, saw {seen}"
    assert resumed["batches"] == full["batches"][2:]
    for a, b in zip(full["steps"][2:], resumed["steps"]):
        keys = sorted(k for k in a if not k.startswith("time/"))
        bad = {k: (a[k], b.get(k)) for k in keys if b.get(k) != pytest.approx(a[k], rel=1e-5, abs=1e-6)}
        assert not bad, str(bad)


def test_vllm_engine_per_rank_under_ddp(tmp_path, tiny_checkpoints, synth_dir):
    _run("ddp_grpo_check.py", tiny_checkpoints["qwen2_vl"], synth_dir, tmp_path, "vllm")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"]
    assert all(r["logprob_diff_max"] <= 1e-5 for r in ranks)


@pytest.mark.parametrize("kwargs", [{"sleep_level": 3}, {"max_model_len": 0}, {"gpu_memory_utilization": 0.0}])
def test_vllm_config_rejects_bad_values(kwargs, loaded_models):
    with pytest.raises(ValueError):
        VLLMRolloutEngine(loaded_models["qwen2_vl"], **kwargs)


def test_vllm_engine_brings_its_weight_sync(tiny_checkpoints):
    """Without a VLLMWeightSync in the trainer the module adds one; a configured one is kept."""
    import lightning as L

    module = GRPOModule(ModelConfig(path=str(tiny_checkpoints["qwen2_vl"])), rollout_engine=VLLMRolloutEngine)
    added = module.configure_callbacks()
    assert len(added) == 1 and isinstance(added[0], VLLMWeightSync) and added[0].every_n_steps == 1
    own = VLLMWeightSync(every_n_steps=3)
    trainer = L.Trainer(accelerator="cpu", callbacks=[own], logger=False, enable_checkpointing=False)
    module.trainer = trainer
    assert module.configure_callbacks() == []
    assert GRPOModule(ModelConfig(path=str(tiny_checkpoints["qwen2_vl"]))).configure_callbacks() == []
    with pytest.raises(ValueError):
        VLLMWeightSync(every_n_steps=-1)
