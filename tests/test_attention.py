"""The attention kernels models load with (lightning_longrl/models/attention.py) give what
transformers' own SDPA path gives, in fewer calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_longrl.models import attention
from lightning_longrl.models.video_lm import LMInputs, VideoLanguageModel


class _CountSDPA:
    """Counts the SDPA kernel calls (and lets every one of them run)."""

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._sdpa = F.scaled_dot_product_attention
        patch.setattr(F, "scaled_dot_product_attention", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._sdpa(*args, **kwargs)


def _encode_with_grads(model: VideoLanguageModel, pixels: torch.Tensor, grid: torch.Tensor):
    model.zero_grad(set_to_none=True)
    pixels = pixels.clone().requires_grad_(True)
    embeds = model.encode_video(pixels, grid).embeds
    (embeds.square().sum() + embeds.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.vision_tower.named_parameters() if p.grad is not None}
    return embeds.detach(), pixels.grad, grads


@pytest.mark.parametrize("grids", [[[4, 2, 2], [6, 2, 2]], [[2, 6, 10], [4, 4, 4], [2, 2, 6]]],
                         ids=["equal-chunks", "unequal-chunks"])
def test_packed_vision_attention_equals_the_per_chunk_loop(tiny_checkpoint, grids):
    model = VideoLanguageModel.from_pretrained(tiny_checkpoint).train()
    vision = model.hf.config.vision_config
    assert model.vision_tower.config._attn_implementation == attention.PACKED_VISION, "loaded with the packed kernel"
    grid = torch.tensor(grids)
    dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(int(grid.prod(-1).sum()), dim, generator=torch.Generator().manual_seed(0))

    with pytest.MonkeyPatch.context() as patch:
        counter = _CountSDPA(patch)
        packed = _encode_with_grads(model, pixels, grid)
        packed_calls, counter.calls = counter.calls, 0
        model.vision_tower.config._attn_implementation = "sdpa"  # transformers' loop over chunks
        loop = _encode_with_grads(model, pixels, grid)
        loop_calls = counter.calls

    torch.testing.assert_close(packed[0], loop[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed[1], loop[1], rtol=1e-5, atol=1e-6)
    assert packed[2].keys() == loop[2].keys() and packed[2]
    for name in loop[2]:
        torch.testing.assert_close(packed[2][name], loop[2][name], rtol=1e-4, atol=1e-6, msg=name)
    assert packed_calls < loop_calls, (packed_calls, loop_calls)
    if grids[0] == [4, 2, 2]:  # one merged window per temporal patch: one call per layer
        assert packed_calls == vision.depth


def test_gqa_language_attention_equals_transformers_sdpa(loaded_models):
    """Left-padded prefill with a mask, then decoding steps with a KV cache: hidden states and
    sampled log-probs equal those of transformers' SDPA path (which repeats the KV heads)."""
    model = loaded_models["qwen2_5_vl"]
    language = model.language_model
    assert language.config._attn_implementation == attention.GQA_SDPA, "loaded with the GQA kernel"
    assert model.text_config.num_key_value_heads < model.text_config.num_attention_heads, "a grouped-query model"
    torch.manual_seed(0)
    embeds = torch.randn(3, 9, model.text_config.hidden_size)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = 0  # left padding: a masked call
    mask[1, :1] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0).view(1, 3, 9).expand(3, 3, 9)
    inputs = LMInputs(embeds, mask, positions)

    def run():
        torch.manual_seed(1)
        generation = model.generate(inputs, max_new_tokens=6, temperature=1.0)
        return model.hidden_states(inputs), generation

    with pytest.MonkeyPatch.context() as patch:
        ours = run()
        patch.setattr(language.config, "_attn_implementation", "sdpa")
        theirs = run()
    real = mask.bool()
    torch.testing.assert_close(ours[0][real], theirs[0][real], rtol=1e-5, atol=1e-5)
    assert torch.equal(ours[1].tokens, theirs[1].tokens)
    torch.testing.assert_close(ours[1].logprobs, theirs[1].logprobs, rtol=1e-5, atol=1e-5)


def test_only_sdpa_parts_are_switched(tiny_checkpoints):
    from transformers import AutoModelForImageTextToText

    path = tiny_checkpoints["qwen2_5_vl"]
    eager = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager", local_files_only=True)
    assert attention.use_fast_attention(eager) == []
    assert eager.model.visual.config._attn_implementation == "eager"
    assert eager.model.language_model.config._attn_implementation == "eager"
    sdpa = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa", local_files_only=True)
    assert attention.use_fast_attention(sdpa) == ["vision", "language"]
    assert sdpa.model.visual.config._attn_implementation == attention.PACKED_VISION
    assert sdpa.model.language_model.config._attn_implementation == attention.GQA_SDPA


def test_packed_attention_needs_chunk_boundaries():
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="cu_seqlens"):
        attention.packed_sdpa_attention(None, q, q, q, None)
