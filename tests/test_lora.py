"""LoRA through PEFT: adapters at zero are the base model exactly, disabled adapters are the base
(GRPO's reference without a second copy), merged weights reproduce the adapted model, and GRPO
trains only the adapters and exports a plain Hugging Face folder."""

import pytest
import torch

from lightning_longrl.data.collate import VideoQACollator
from lightning_longrl.data.dataset import VideoQADataset
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.models.config import ModelConfig, load_model
from lightning_longrl.models.lora import LoRAConfig, adapter_scalings, adapters_disabled, merged_weights
from lightning_longrl.models.video_lm import VideoLanguageModel

ARCHS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


def _batch(model: VideoLanguageModel, synth_dir):
    multiple = model.frame_size_multiple
    dataset = VideoQADataset(f"{synth_dir}/train.jsonl", FrameSampling(num_frames=4, max_pixels=(2 * multiple) ** 2,
                                                                        size_multiple=multiple))
    return VideoQACollator(model.processor, mode="sft")([dataset[0], dataset[1]])


@torch.no_grad()
def _logprobs(model: VideoLanguageModel, batch) -> torch.Tensor:
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    inputs = model.embed(batch.input_ids, batch.attention_mask, video)
    return model.score_targets(model.hidden_states(inputs), batch.input_ids, batch.labels != -100).logprobs


def _move_adapters(model: VideoLanguageModel) -> None:
    generator = torch.Generator().manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.copy_(0.05 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("arch", ARCHS)
def test_adapters_at_zero_disabled_and_merged_against_the_base(arch, tiny_checkpoints, synth_dir):
    path = str(tiny_checkpoints[arch])
    base = load_model(ModelConfig(path=path)).eval()
    adapted = load_model(ModelConfig(path=path, freeze_vision=False, lora=LoRAConfig(rank=4, vision=True))).eval()
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert any("visual" in n for n in trainable) and any("language_model" in n for n in trainable)
    batch = _batch(base, synth_dir)
    reference = _logprobs(base, batch)
    assert torch.equal(_logprobs(adapted, batch), reference), "adapters start at zero: the base model exactly"

    _move_adapters(adapted)
    moved = _logprobs(adapted, batch)
    assert not torch.allclose(moved, reference, atol=1e-4), "moved adapters change the model"
    with adapters_disabled(adapted.hf):
        assert torch.equal(_logprobs(adapted, batch), reference), "disabled adapters: the base model exactly"
    assert torch.equal(_logprobs(adapted, batch), moved), "adapters come back after the reference pass"

    merged = dict(merged_weights(adapted.hf.state_dict().items(), adapter_scalings(adapted.hf)))
    assert set(merged) == set(base.hf.state_dict()), "merged weights carry the original names only"
    base.hf.load_state_dict(merged)
    torch.testing.assert_close(_logprobs(base, batch), moved, atol=2e-5, rtol=0)


def test_lora_settings_are_checked():
    with pytest.raises(ValueError, match="lora rank must be >= 1"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="lora.vision needs freeze_vision: false"):
        ModelConfig(path="x", lora=LoRAConfig(vision=True))
    assert ModelConfig(path="x", lora={"rank": 8}).lora == LoRAConfig(rank=8), "from a checkpoint's hyper-parameters"


def test_grpo_with_lora_trains_the_adapters_against_the_base_and_exports_merged(tmp_path, tiny_checkpoints, synth_dir):
    """Only adapter weights move; no second model is loaded for the KL term (the reference pass is
    the policy with adapters disabled, equal to the base checkpoint); the export is a plain folder
    whose model equals the adapted policy."""
    from lightning_longrl.rl.objective import GRPOLossConfig

    from helpers import PARITY_REWARDS, grpo_run

    path = tiny_checkpoints["qwen2_5_vl"]
    trainer, module, data = grpo_run(
        tmp_path, path, synth_dir, max_steps=2, num_frames=4, max_pixels=56 * 56, batch_size=2, num_workers=0,
        module_kwargs={"model": ModelConfig(path=str(path), lora=LoRAConfig(rank=4)),
                       "loss": GRPOLossConfig(kl_coef=0.05), "rewards": PARITY_REWARDS,
                       "optimizer": lambda params: torch.optim.AdamW(params, lr=5e-2)})
    base_state = {k: v.clone() for k, v in load_model(ModelConfig(path=str(path))).hf.state_dict().items()}
    trainer.fit(module, data)
    assert module.ref is None, "the reference is the policy with its adapters off, not a second copy"
    assert module.policy_updated
    state = module.model.hf.state_dict()
    adapters = {k: v for k, v in state.items() if ".lora_B." in k}
    assert any(v.abs().sum() > 0 for v in adapters.values()), "the adapters trained"
    for name, value in state.items():
        if ".lora_" not in name:
            assert torch.equal(value, base_state[name.replace(".base_layer.", ".")]), f"{name} moved"

    batch = _batch(module.model, synth_dir)
    module.model.eval()
    with module.reference_model() as reference:
        assert torch.equal(_logprobs(reference, batch), _logprobs(load_model(ModelConfig(path=str(path))).eval(), batch))
    folder = module.export_pretrained(tmp_path / "hf")
    exported = VideoLanguageModel.from_pretrained(str(folder)).eval()
    assert not any("lora" in n for n, _ in exported.named_parameters())
    torch.testing.assert_close(_logprobs(exported, batch), _logprobs(module.model, batch), atol=2e-5, rtol=0)


@pytest.mark.slow
def test_lora_grpo_under_mrsp_sharded_and_sequence_parallel_matches_replicated(tmp_path, tiny_checkpoints, synth_dir):
    """LoRA GRPO under MRSPStrategy with replicated weights on 2 processes (data parallel, as DDP)
    is the reference; with sharded weights and sequence-parallel pairs on 4 processes each pair
    samples its replica's rollouts, with the same losses and the same weights afterwards (adapters
    and frozen base, gathered)."""
    from helpers import mrsp_fit_run

    checkpoint = tiny_checkpoints["qwen2_5_vl"]
    replicated = mrsp_fit_run(tmp_path / "replicated", checkpoint, synth_dir, 2, 1, "grpo", "--lora")
    assert abs(replicated[0]["checksum"] - replicated[0]["start_checksum"]) > 1e-4, "training must move the adapters"
    assert replicated[0]["trainable"] < replicated[0]["held"] / 5, "only the adapters train"
    rows = mrsp_fit_run(tmp_path / "sharded", checkpoint, synth_dir, 4, 2, "grpo", "--lora", "--shard")
    for rank, row in enumerate(rows):
        twin = replicated[rank // 2]
        assert row["batches"] == twin["batches"] and row["rewards"] == twin["rewards"]
        assert row["losses"] == pytest.approx(twin["losses"], abs=1e-5)
        assert row["checksum"] == pytest.approx(twin["checksum"], rel=1e-6)
        decoder, mine = twin["held"] - twin["vision"], row["held"] - row["vision"]
        assert decoder / 4 <= mine < decoder / 4 + 2000, "each rank holds its share of the language model"
    assert rows[0]["batches"] != rows[2]["batches"], "the two data-parallel groups see different samples"


def test_sft_with_lora_trains_adapters_and_exports_through_the_callback(tmp_path, tiny_checkpoints, synth_dir):
    """SFT takes the same ``model.lora``; the HFExport callback's folder (from the strategy's state
    dict) is a plain model equal to the adapted one; the LoRA settings are given as a checkpoint stores them (a dict)."""
    from lightning_longrl import SFTModule
    from lightning_longrl.callbacks import HFExport

    from helpers import sft_run

    path = tiny_checkpoints["qwen2_vl"]
    trainer, _, data = sft_run(tmp_path, path, synth_dir, max_steps=2, num_frames=4,
                               trainer_kwargs={"callbacks": [HFExport(str(tmp_path / "export"))], "limit_val_batches": 0})
    module = SFTModule(ModelConfig(path=str(path), lora={"rank": 4}),
                       optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    trainer.fit(module, data)
    assert any(v.abs().sum() > 0 for k, v in module.model.hf.state_dict().items() if ".lora_B." in k)
    exported = VideoLanguageModel.from_pretrained(str(tmp_path / "export")).eval()
    module.model.eval()
    batch = _batch(exported, synth_dir)
    torch.testing.assert_close(_logprobs(exported, batch), _logprobs(module.model, batch), atol=2e-5, rtol=0)
