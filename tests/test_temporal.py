"""The temporal-contrast reward: shuffled cached embeddings equal the vision tower on the shuffled
frames (every architecture), the bonus by hand, and a GRPO step that adds it without encoding again."""

import pytest
import torch
from test_video_lm import make_batch

from lightning_longrl.rl.temporal import TemporalContrastConfig, shuffle_frames, temporal_bonus
from lightning_longrl.synth.tiny_model import ARCHITECTURES

from helpers import PARITY_REWARDS, grpo_run


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_permuted_cached_embeddings_equal_encoding_the_shuffled_frames(arch, loaded_models, synth_dir):
    """Exact (to float rounding of a differently batched matmul): each tower attends within one
    temporal patch only, so moving patches moves their embeddings and changes nothing else."""
    model = loaded_models[arch]
    batch = make_batch(model, synth_dir, "prompt", indices=(0,), num_frames=16)
    t, h, w = batch.grid_thw[0].tolist()
    assert t >= 4
    cached = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    order = torch.tensor([2, 0, 3, 1] + list(range(4, t)))
    patches = batch.pixel_values.view(t, h * w, -1)[order].reshape(batch.pixel_values.shape)
    encoded = model.encode_video(patches, batch.grid_thw)
    permuted = cached.permute_frames(order)
    assert (permuted.embeds - encoded.embeds).abs().max().item() <= 1e-6
    assert len(permuted.deepstack) == len(encoded.deepstack) == (1 if arch == "qwen3_vl" else 0)
    for a, b in zip(permuted.deepstack, encoded.deepstack):
        assert (a - b).abs().max().item() <= 1e-6
    assert (permuted.embeds - cached.embeds).abs().max().item() > 1e-3, "the frames differ, so the order must show"
    with pytest.raises(ValueError, match="permutation"):
        cached.permute_frames(torch.tensor([0, 0, 1]))


def test_shuffle_never_returns_the_original_order(loaded_models, synth_dir):
    model = loaded_models["qwen2_5_vl"]
    batch = make_batch(model, synth_dir, "prompt", indices=(0,), num_frames=4)  # 2 temporal patches: one other order
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        (shuffled,) = shuffle_frames([video], generator)
        assert torch.equal(shuffled.embeds, video.permute_frames(torch.tensor([1, 0])).embeds)


def test_temporal_bonus_hand_values():
    accuracy = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    shuffled = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # p = 0.5, 0.25, 0; 0.8 * p_shuffled = 0.2, 0.6, 0.2: order helped only the first question
    bonus = temporal_bonus(accuracy, shuffled, bonus=0.3, margin=0.8)
    assert torch.allclose(bonus, torch.tensor([[0.3, 0.3, 0.0, 0.0], [0.0] * 4, [0.0] * 4]))
    with pytest.raises(ValueError):
        TemporalContrastConfig(bonus=-1.0)


def test_grpo_step_with_the_temporal_reward_encodes_each_video_once(tmp_path, tiny_checkpoints, synth_dir):
    counts = {}
    for enabled in (False, True):
        trainer, module, data = grpo_run(
            tmp_path / str(enabled), tiny_checkpoints["qwen2_5_vl"], synth_dir, max_steps=1,
            module_kwargs={"rewards": PARITY_REWARDS, "temporal_contrast": TemporalContrastConfig(enabled=enabled, margin=0.0)},
        )
        trainer.fit(module, data)
        metrics = trainer.callback_metrics
        counts[enabled] = (float(metrics["vision/encoder_calls"]), float(metrics["vision/encoded_videos"]))
    groups = module.last_groups
    assert counts[True] == counts[False] and counts[True][1] == groups.num_groups
    # margin 0: order always "helped", so every right answer got the bonus and the total carries it
    assert torch.equal(groups.terms["temporal"], 0.3 * groups.terms["accuracy"])
    assert groups.terms["shuffled_accuracy"].shape == groups.rewards.shape
    assert torch.allclose(groups.rewards, 1.0 * groups.terms["accuracy"] + 0.1 * groups.terms["format"] + groups.terms["temporal"])
    assert "reward/shuffled_accuracy_mean" in metrics and "reward/temporal_mean" in metrics
    with pytest.raises(ValueError, match="temporal_contrast needs a reward term named 'accuracy'"):
        grpo_run(tmp_path / "bad", tiny_checkpoints["qwen2_5_vl"], synth_dir,
                 module_kwargs={"rewards": [{"name": "format", "function": "lightning_longrl.rl.rewards.format_reward"}],
                                "temporal_contrast": TemporalContrastConfig(enabled=True)})
