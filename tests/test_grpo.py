"""GRPO on tiny real models: learning signal, embedding cache, cache invalidation, resume."""

import lightning as L
import pytest
import torch

from lightning_longrl.callbacks import EmbeddingCacheInvalidation, RolloutSampleLogger
from lightning_longrl.models.config import ModelConfig
from lightning_longrl.rl.embedding_cache import EmbeddingCacheConfig
from lightning_longrl.rl.monitoring import PhaseTimer
from lightning_longrl.rl.rollout import SamplingConfig
from lightning_longrl.stages.grpo import DynamicSamplingConfig, UpdateConfig

from helpers import PARITY_REWARDS, MetricsRecorder, SaveEveryBatch, grpo_run

REQUIRED_METRICS = [
    "reward/total_mean", "reward/total_std", "reward/accuracy_mean", "reward/accuracy_std", "reward/format_mean",
    "reward/format_std", "response/length_mean", "policy/kl", "policy/clip_fraction", "policy/entropy",
    "advantage/mean", "advantage/std", "advantage/abs_mean", "groups/all_equal_fraction", "vision/encoder_calls",
    "vision/encoded_videos", "time/decode", "time/encode", "time/rollout", "time/reward", "time/reference", "time/update",
    "rollout/logprob_diff_mean", "rollout/logprob_diff_max",
]


class GroupCapture(L.Callback):
    """Log-probs of each step's responses before and after its update."""

    def __init__(self) -> None:
        self.before: list[dict] = []
        self.after: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        groups = pl_module.last_groups
        rows = list(range(groups.num_groups * groups.group_size))
        with torch.no_grad():
            now = pl_module.scorer.score(pl_module.model, groups, rows, "policy", PhaseTimer())[0]
        self.before.append({"groups": groups, "old": groups.rollout_logprobs.clone()})
        self.after.append(now)


def test_update_moves_log_probs_along_the_advantages(tmp_path, tiny_checkpoints, synth_dir):
    """Responses with positive advantage become more likely, negative ones less (sign of the gradient)."""
    capture = GroupCapture()
    trainer, module, data = grpo_run(
        tmp_path, tiny_checkpoints["qwen2_5_vl"], synth_dir, max_steps=2,
        module_kwargs={"rewards": PARITY_REWARDS, "optimizer": lambda p: torch.optim.SGD(p, lr=0.5)},
        trainer_kwargs={"callbacks": [capture]},
    )
    before = [p.detach().clone() for p in module.parameters()] if module.model is not None else None
    trainer.fit(module, data)
    moved = 0.0
    for step, after in zip(capture.before, capture.after):
        groups, old = step["groups"], step["old"]
        delta = ((after - old) * groups.response_mask).sum(-1)  # change of each response's log-prob
        advantages = groups.advantages.flatten()
        assert advantages.abs().sum() > 0, "the parity reward should give mixed groups"
        moved += float((advantages * delta).sum())
        assert float((advantages * delta).sum()) > 0
    assert moved > 0
    assert before is None  # the model is built in configure_model


def test_grpo_run_logs_everything_and_changes_the_policy(tmp_path, tiny_checkpoints, synth_dir):
    trainer, module, data = grpo_run(
        tmp_path, tiny_checkpoints["qwen2_vl"], synth_dir, max_steps=2,
        module_kwargs={"rewards": PARITY_REWARDS, "optimizer": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.0)},
        trainer_kwargs={"callbacks": [RolloutSampleLogger(every_n_steps=1, max_questions=1)]},
    )
    module.configure_model()
    start = {k: v.clone() for k, v in module.model.state_dict().items()}
    ref_start = {k: v.clone() for k, v in module.ref.state_dict().items()}
    trainer.fit(module, data)
    changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v, start[k])]
    assert changed, "GRPO did not change any parameter"
    assert not any("visual" in k for k in changed), "the vision tower is frozen by default"
    assert all(torch.equal(v, ref_start[k]) for k, v in module.ref.state_dict().items()), "the reference model moved"
    metrics = trainer.callback_metrics
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    assert not missing, f"metrics not logged: {missing}"
    # the policy engine samples from the weights the trainer scores with
    assert float(metrics["rollout/logprob_diff_max"]) < 1e-4
    assert trainer.global_step == 2
    # sampled completions and their frames went to TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert "rollouts/frames_0" in events.Tags()["images"]
    assert any(t.startswith("rollouts/question_0") for t in events.Tags()["tensors"])
    assert "reward/total_mean" in events.Tags()["scalars"]


def _one_step_counts(tmp_path, checkpoint, synth_dir, enabled: bool, old_policy_pass: str = "always"):
    trainer, module, data = grpo_run(
        tmp_path, checkpoint, synth_dir, max_steps=1,
        module_kwargs={"embedding_cache": EmbeddingCacheConfig(enabled=enabled),
                       "update": UpdateConfig(old_policy_pass=old_policy_pass)},
    )
    trainer.fit(module, data)
    return {k: float(trainer.callback_metrics[k]) for k in ("vision/encoder_calls", "vision/encoded_videos")}


def test_cache_encodes_each_video_once_per_step(tmp_path, tiny_checkpoints, synth_dir):
    checkpoint = tiny_checkpoints["qwen2_5_vl"]
    on = _one_step_counts(tmp_path / "on", checkpoint, synth_dir, True)
    off = _one_step_counts(tmp_path / "off", checkpoint, synth_dir, False)
    b, g = 2, 4
    assert on == {"vision/encoder_calls": 1, "vision/encoded_videos": b}
    # off: every rollout (G), the old-policy, reference and update passes each encode the batch again
    assert off == {"vision/encoder_calls": g + 3, "vision/encoded_videos": b * (g + 3)}
    # one epoch of one mini-batch: the old-policy pass is provably the update's own, and skipped
    skipped = _one_step_counts(tmp_path / "auto", checkpoint, synth_dir, False, "auto")
    assert skipped == {"vision/encoder_calls": g + 2, "vision/encoded_videos": b * (g + 2)}


def test_skipped_old_policy_pass_trains_exactly_as_a_separate_pass(tmp_path, tiny_checkpoints, synth_dir):
    """With one epoch of one mini-batch the old policy is the current one: taking the update's
    detached log-probs as the old ones (ratio exactly 1) gives the same weights as a separate pass."""
    weights, logged = [], []
    for mode in ("always", "auto"):
        recorder = MetricsRecorder()
        trainer, module, data = grpo_run(
            tmp_path / mode, tiny_checkpoints["qwen2_5_vl"], synth_dir, max_steps=2,
            module_kwargs={"rewards": PARITY_REWARDS, "update": UpdateConfig(old_policy_pass=mode),
                           "optimizer": lambda p: torch.optim.SGD(p, lr=0.5)},
            trainer_kwargs={"callbacks": [recorder]},
        )
        trainer.fit(module, data)
        weights.append({n: p.detach().clone() for n, p in module.model.named_parameters()})
        logged.append(recorder.steps)
    assert all("time/old_policy" in step for step in logged[0]) and not any("time/old_policy" in step for step in logged[1])
    assert any(step["policy/grad_norm"] > 0 for step in logged[0])
    for name, value in weights[0].items():
        assert torch.allclose(value, weights[1][name], atol=1e-6, rtol=0), name
    for key in ("policy/loss", "policy/kl", "rollout/logprob_diff_max"):
        assert [s[key] for s in logged[0]] == pytest.approx([s[key] for s in logged[1]], abs=1e-6), key


def test_gradient_checkpointing_with_frozen_vision_trains_like_without(tmp_path, tiny_checkpoints, synth_dir):
    """The real-model settings (configs/qwen2_5_vl_7b/grpo.yaml: frozen vision tower, gradient
    checkpointing, shared prefill): the update scores whole sequences instead of the shared
    prefill, which checkpointed layers cannot backpropagate through, and trains as without
    checkpointing. (It raised in the update pass before, found by benchmarks/gpu_check.py.)"""
    weights, logged = [], []
    for checkpointing in (False, True):
        recorder = MetricsRecorder()
        trainer, module, data = grpo_run(
            tmp_path / str(checkpointing), tiny_checkpoints["qwen2_5_vl"], synth_dir, max_steps=2,
            module_kwargs={"model": ModelConfig(path=str(tiny_checkpoints["qwen2_5_vl"]), gradient_checkpointing=checkpointing),
                           "rewards": PARITY_REWARDS, "update": UpdateConfig(shared_prefill=True),
                           "optimizer": lambda p: torch.optim.SGD(p, lr=0.5)},
            trainer_kwargs={"callbacks": [recorder]},
        )
        trainer.fit(module, data)
        assert module.model.hf.is_gradient_checkpointing == checkpointing
        weights.append({n: p.detach().clone() for n, p in module.model.named_parameters()})
        logged.append(recorder.steps)
    assert any(step["policy/grad_norm"] > 0 for step in logged[0])
    for name, value in weights[0].items():
        assert torch.allclose(value, weights[1][name], atol=1e-5, rtol=0), name
    for key in ("policy/loss", "policy/kl"):
        assert [s[key] for s in logged[0]] == pytest.approx([s[key] for s in logged[1]], abs=1e-5), key


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_logprobs_with_cache_equal_logprobs_without(tmp_path, tiny_checkpoints, synth_dir, arch):
    """Scoring rollouts from cached embeddings equals re-encoding the pixels for the pass, and a
    prefill shared by a question's responses equals one full sequence per response."""
    trainer, module, data = grpo_run(tmp_path, tiny_checkpoints[arch], synth_dir, max_steps=1,
                                     module_kwargs={"embedding_cache": EmbeddingCacheConfig(enabled=False)})
    trainer.fit(module, data)
    groups = module.last_groups
    rows = list(range(groups.num_groups * groups.group_size))
    scores = {}
    for cached in (False, True):
        for shared in (False, True):
            module.cache.config.enabled = cached  # off: re-encode the pixels for this pass
            module.update_config.shared_prefill = shared
            with torch.no_grad():
                scores[cached, shared] = module.scorer.score(module.model, groups, rows, "policy", PhaseTimer(), entropy=True)
    assert groups.response_mask.sum() > 10
    reference, reference_entropy = scores[False, False]
    for key, (logprobs, entropy) in scores.items():
        assert (logprobs - reference).abs().max().item() <= 1e-5, key
        assert (entropy - reference_entropy).abs().max().item() <= 1e-4, key
    # and both equal the log-probs the rollout engine reported while sampling (KV-cached decoding)
    assert ((reference - groups.rollout_logprobs).abs() * groups.response_mask).max().item() <= 1e-4


def test_shared_prefill_gradients_equal_full_sequence_gradients(tmp_path, tiny_checkpoints, synth_dir):
    trainer, module, data = grpo_run(tmp_path, tiny_checkpoints["qwen2_5_vl"], synth_dir, max_steps=1)
    trainer.fit(module, data)
    groups = module.last_groups
    rows = list(range(groups.num_groups * groups.group_size))
    weights = torch.randn(groups.responses.shape, generator=torch.Generator().manual_seed(0))
    grads = []
    for shared in (False, True):
        module.update_config.shared_prefill = shared
        module.model.zero_grad(set_to_none=True)
        logprobs, _ = module.scorer.score(module.model, groups, rows, "policy", PhaseTimer(), grad=False)
        (logprobs * weights * groups.response_mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


def _two_question_dataset(synth_dir, out):
    """The first two training records only: one batch, the same two videos in every epoch."""
    out.mkdir(parents=True, exist_ok=True)
    lines = (synth_dir / "train.jsonl").read_text().splitlines()[:2]
    (out / "train.jsonl").write_text("\n".join(lines) + "\n")
    (out / "val.jsonl").write_text((synth_dir / "val.jsonl").read_text())
    if not (out / "videos").exists():
        (out / "videos").symlink_to(synth_dir / "videos")
    return out


def _train_cache_run(tmp_path, checkpoint, synth_dir, freeze_vision: bool, mode: str | None):
    """Two steps on the same batch; ``mode None``: no invalidation callback configured."""
    callback = EmbeddingCacheInvalidation(mode) if mode is not None else None
    recorder = MetricsRecorder()
    data_dir = _two_question_dataset(synth_dir, tmp_path / "data")
    trainer, module, data = grpo_run(
        tmp_path, checkpoint, data_dir, max_steps=2,
        module_kwargs={"model": ModelConfig(path=str(checkpoint), freeze_vision=freeze_vision), "rewards": PARITY_REWARDS,
                       "optimizer": lambda p: torch.optim.SGD(p, lr=0.5)},
        trainer_kwargs={"callbacks": [c for c in (callback, recorder) if c is not None], "limit_train_batches": 1,
                        "max_epochs": 2},
    )
    trainer.fit(module, data)
    return trainer, module, data, callback, recorder


def _fresh_embeddings_match_cache(module, data):
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        fresh = module.model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    fresh = fresh.split(module.model.spatial_merge_size, batch.visual_items)
    version = module.cache.version("policy")
    cached = [module.cache._entries.get(("policy", key, version)) for key in batch.media_keys]
    return all(c is not None and torch.allclose(c.embeds, f.embeds, atol=1e-6) for c, f in zip(cached, fresh))


def test_frozen_vision_keeps_cache_entries_across_steps(tmp_path, tiny_checkpoints, synth_dir):
    trainer, module, data, callback, recorder = _train_cache_run(tmp_path, tiny_checkpoints["qwen2_5_vl"], synth_dir, True, "auto")
    assert not callback.active and callback.invalidations == 0
    # the same (single) batch in both epochs: encoded in step 1, served from the cache in step 2
    assert [s["vision/encoded_videos"] for s in recorder.steps] == [2.0, 0.0]
    assert recorder.steps[1]["vision/cache_hits"] == 2.0
    assert _fresh_embeddings_match_cache(module, data)


def test_trainable_vision_invalidates_after_every_optimizer_step(tmp_path, tiny_checkpoints, synth_dir):
    trainer, module, data, callback, recorder = _train_cache_run(tmp_path, tiny_checkpoints["qwen2_5_vl"], synth_dir, False, "auto")
    assert callback.active and callback.invalidations == trainer.global_step == 2
    assert module.cache.version("policy") == 2
    # step 1: rollout encoding (2 videos), the reference tower (2; it differs from the trained
    # one), the update with grad (2). Step 2: the policy's entries were invalidated, so rollouts
    # encode again (2) and the update too (2); only the frozen reference's entries are reused.
    assert [s["vision/encoded_videos"] for s in recorder.steps] == [6.0, 4.0]
    assert [s["vision/cache_hits"] for s in recorder.steps] == [0.0, 2.0]
    # the vision tower did change, so a stale entry would differ from a fresh encoding
    trainer2, module2, data2, _, _ = _train_cache_run(tmp_path / "never", tiny_checkpoints["qwen2_5_vl"], synth_dir, False, "never")
    assert not _fresh_embeddings_match_cache(module2, data2), "without invalidation the cache serves stale embeddings"


def test_trainable_vision_adds_the_invalidation_callback_itself(tmp_path, tiny_checkpoints, synth_dir):
    """Nobody configured EmbeddingCacheInvalidation: the module adds it, so the cache cannot go stale."""
    trainer, module, data, _, recorder = _train_cache_run(tmp_path, tiny_checkpoints["qwen2_5_vl"], synth_dir, False, None)
    added = [c for c in trainer.callbacks if isinstance(c, EmbeddingCacheInvalidation)]
    assert len(added) == 1 and added[0].active and added[0].invalidations == 2
    assert [s["vision/encoded_videos"] for s in recorder.steps] == [6.0, 4.0]  # step 2 encodes again
    frozen, *_ = _train_cache_run(tmp_path / "frozen", tiny_checkpoints["qwen2_5_vl"], synth_dir, True, None)
    assert not any(isinstance(c, EmbeddingCacheInvalidation) for c in frozen.callbacks)


def _resume_run(tmp_path, checkpoint, synth_dir, max_steps, ckpt_path=None, dynamic=False):
    recorder = MetricsRecorder()
    saver = SaveEveryBatch(tmp_path / "ckpt")
    module_kwargs = {"rewards": PARITY_REWARDS, "optimizer": lambda p: torch.optim.AdamW(p, lr=1e-2)}
    if dynamic:
        # G=2 makes all-equal groups common, so rounds keep fewer or more groups than a batch
        module_kwargs["dynamic_sampling"] = DynamicSamplingConfig(enabled=True, max_tries=3)
        module_kwargs["sampling"] = SamplingConfig(num_samples=2, max_new_tokens=12)
    trainer, module, data = grpo_run(
        tmp_path, checkpoint, synth_dir, max_steps=max_steps, module_kwargs=module_kwargs,
        trainer_kwargs={"callbacks": [recorder, saver], "limit_train_batches": 3, "max_epochs": 10, "logger": False},
    )
    L.seed_everything(123)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return recorder


def _checkpoint_to_resume(folder, dynamic: bool):
    """After batch 2 (mid-epoch: 3 batches per epoch); with dynamic sampling, the first checkpoint
    whose buffer holds groups kept for the next update."""
    paths = sorted(folder.glob("batch=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    if not dynamic:
        return next(p for p in paths if p.stem == "batch=2")
    for path in paths:
        if torch.load(path, weights_only=True)["grpo"]["ranks"][0]["buffer"]:
            return path
    raise AssertionError("no checkpoint with a non-empty dynamic-sampling buffer; the test does not exercise it")


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True], ids=["plain", "dynamic_sampling"])
def test_resumed_run_matches_uninterrupted_run(tmp_path, tiny_checkpoints, synth_dir, dynamic):
    checkpoint = tiny_checkpoints["qwen2_vl"]
    full = _resume_run(tmp_path / "full", checkpoint, synth_dir, max_steps=5, dynamic=dynamic)
    ckpt = _checkpoint_to_resume(tmp_path / "full" / "ckpt", dynamic)
    resumed = _resume_run(tmp_path / "resumed", checkpoint, synth_dir, max_steps=5, ckpt_path=str(ckpt), dynamic=dynamic)
    assert 2 <= len(resumed.batches) < len(full.batches)
    if not dynamic:
        assert resumed.batches == full.batches[2:], "the resumed run must see the rest of the epoch in the same order"
    assert resumed.batches == full.batches[-len(resumed.batches):]
    for a, b in zip(full.steps[-len(resumed.steps):], resumed.steps):
        keys = sorted(k for k in a if not k.startswith("time/"))
        assert keys == sorted(k for k in b if not k.startswith("time/"))
        bad = {key: (a[key], b[key]) for key in keys if b[key] != pytest.approx(a[key], rel=1e-5, abs=1e-6)}
        assert not bad, str(bad)


def test_thumbnail_grid_tiles_evenly_spaced_frames_row_by_row():
    from lightning_longrl.rl.monitoring import thumbnail_grid

    frames = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 2, 3, 3).contiguous()  # frame i is all i
    grid = thumbnail_grid(frames, max_frames=5, columns=2)  # frames 0, 5, 10, 14, 19 in 3 rows of 2
    assert grid.shape == (3, 3 * 2, 2 * 3) and grid.dtype == torch.uint8
    cells = [[int(grid[0, r * 2, c * 3]) for c in range(2)] for r in range(3)]
    assert cells == [[0, 5], [10, 14], [19, 0]]  # the empty last cell stays black
