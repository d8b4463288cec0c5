"""The model interface against the plain Hugging Face computation, per architecture (float32)."""

import pytest
import torch

from lightning_longrl.data.collate import IGNORE_INDEX, VideoQACollator
from lightning_longrl.data.dataset import VideoQADataset
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.inference.batch_ops import embed_batch
from lightning_longrl.models.video_lm import VideoEmbeddings, VideoLanguageModel
from lightning_longrl.synth.tiny_model import ARCHITECTURES

from helpers import reference_logprobs  # noqa: E402  (tests/ is on sys.path)

TOL = 1e-5


def make_batch(model, synth_dir, mode, indices=(0, 1, 2), num_frames=12):
    multiple = model.frame_size_multiple
    dataset = VideoQADataset(
        synth_dir / "train.jsonl", FrameSampling(num_frames=num_frames, max_pixels=(2 * multiple) ** 2, size_multiple=multiple)
    )
    return VideoQACollator(model.processor, mode=mode)([dataset[i] for i in indices])


def hf_kwargs(model, batch):
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values_videos=batch.pixel_values,
                  video_grid_thw=batch.grid_thw, mm_token_type_ids=batch.mm_token_type_ids)
    if model.model_type == "qwen2_5_vl":
        kwargs["second_per_grid_ts"] = batch.second_per_grid_ts
    return kwargs


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_cached_embedding_logprobs_equal_plain_forward(arch, loaded_models, synth_dir):
    model = loaded_models[arch]
    batch = make_batch(model, synth_dir, "sft")
    mask = batch.labels != IGNORE_INDEX
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    inputs = model.embed(batch.input_ids, batch.attention_mask, video)
    ours = model.token_logprobs(inputs, batch.input_ids, mask)
    model.hf.model.rope_deltas = None
    logits = model.hf(**hf_kwargs(model, batch), position_ids=inputs.position_ids).logits
    ref = reference_logprobs(logits, batch.input_ids, mask)
    assert mask.sum() > 50  # response tokens of the batch
    assert (ours - ref).abs().max().item() <= TOL
    assert (ours[~mask] == 0).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_positions_agree_with_transformers_on_video_tokens(arch, loaded_models, synth_dir):
    model = loaded_models[arch]
    batch = make_batch(model, synth_dir, "sft")
    ours = model.position_ids(batch.input_ids, batch.attention_mask, batch.grid_thw, batch.second_per_grid_ts)
    theirs, _ = model.hf.model.get_rope_index(
        batch.input_ids, batch.mm_token_type_ids, video_grid_thw=batch.grid_thw,
        second_per_grid_ts=batch.second_per_grid_ts if arch == "qwen2_5_vl" else None, attention_mask=batch.attention_mask,
    )
    video = batch.input_ids == model.hf.config.video_token_id
    assert torch.equal(ours[:, video], theirs[:, video])
    before = video.long().cumsum(1) == 0
    assert torch.equal(ours[:, before], theirs[:, before])
    if arch == "qwen3_vl":
        assert torch.equal(ours, theirs)
    # text after a video continues after the largest position used (Qwen reference / vLLM rule)
    for row in range(len(batch)):
        last_video = video[row].nonzero().max()
        assert ours[0, row, last_video + 1] == ours[:, row, : last_video + 1].max() + 1


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_right_padding_does_not_change_logprobs(arch, loaded_models, synth_dir):
    model = loaded_models[arch]
    together = make_batch(model, synth_dir, "sft", indices=(0, 3))
    assert together.attention_mask[0].sum() != together.attention_mask[1].sum()
    for row, index in enumerate((0, 3)):
        alone = make_batch(model, synth_dir, "sft", indices=(index,))
        mask = alone.labels != IGNORE_INDEX
        single = model.token_logprobs(embed_batch(model, alone), alone.input_ids, mask)
        both = model.token_logprobs(embed_batch(model, together), together.input_ids, together.labels != IGNORE_INDEX)
        n = alone.input_ids.shape[1]
        assert (both[row, :n] - single[0]).abs().max().item() <= TOL


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_frames_encode_independently_across_splits(arch, loaded_models, synth_dir):
    """Encoding the first and second halves of a video's temporal patches apart equals encoding it whole
    (what parallel encoding across sequence-parallel ranks relies on)."""
    model = loaded_models[arch]
    batch = make_batch(model, synth_dir, "prompt", indices=(0,), num_frames=16)
    t, h, w = batch.grid_thw[0].tolist()
    whole = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    cut = (t // 2) * h * w
    parts = [
        model.encode_video(batch.pixel_values[:cut], torch.tensor([[t // 2, h, w]])),
        model.encode_video(batch.pixel_values[cut:], torch.tensor([[t - t // 2, h, w]])),
    ]
    joined = VideoEmbeddings.cat(parts)
    assert (joined.embeds - whole.embeds).abs().max().item() <= TOL
    for a, b in zip(joined.deepstack, whole.deepstack):
        assert (a - b).abs().max().item() <= TOL
    assert len(whole.deepstack) == (1 if arch == "qwen3_vl" else 0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_sampled_logprobs_equal_teacher_forced(arch, loaded_models, synth_dir):
    model = loaded_models[arch]
    batch = make_batch(model, synth_dir, "prompt", indices=(0, 3))
    assert not batch.attention_mask[:, -1].eq(0).any() and batch.attention_mask[:, 0].eq(0).any()  # left padded
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    inputs = model.embed(batch.input_ids, batch.attention_mask, video)
    sample = model.generate(inputs, max_new_tokens=20, temperature=0.8, generator=torch.Generator().manual_seed(0))
    ids = torch.cat([batch.input_ids, sample.tokens], 1)
    mask = torch.cat([batch.attention_mask, sample.mask.long()], 1)
    full = model.embed(ids, mask, video)
    # generate() reports log-probs under the temperature-scaled distribution it samples from,
    # which never includes the vision placeholder tokens
    logits = model.hf.lm_head(model.hidden_states(full)[:, :-1]).float() / 0.8
    logits[..., model.banned_token_ids] = float("-inf")
    forced = torch.zeros(ids.shape)
    forced[:, 1:] = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    prompt_len = batch.input_ids.shape[1]
    assert sample.mask.sum() > 20
    assert not torch.isin(sample.tokens, torch.tensor(model.banned_token_ids)).any()
    assert (forced[:, prompt_len:] * sample.mask - sample.logprobs).abs().max().item() <= TOL


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_greedy_generation_matches_teacher_forced_argmax(arch, loaded_models, synth_dir):
    model = loaded_models[arch]
    batch = make_batch(model, synth_dir, "prompt", indices=(0, 3))
    greedy = model.generate(embed_batch(model, batch), max_new_tokens=16, greedy=True)
    ids = torch.cat([batch.input_ids, greedy.tokens], 1)
    mask = torch.cat([batch.attention_mask, greedy.mask.long()], 1)
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    hidden = model.hidden_states(model.embed(ids, mask, video))
    prompt_len = batch.input_ids.shape[1]
    argmax = model.hf.lm_head(hidden[:, prompt_len - 1 : -1]).argmax(-1)
    assert torch.equal(argmax[greedy.mask], greedy.tokens[greedy.mask])


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen3_vl"])
@torch.no_grad()
def test_greedy_generation_matches_hf_generate(arch, loaded_models, synth_dir):
    """Where transformers' own positions follow the reference rule, its generate() agrees with ours."""
    model = loaded_models[arch]
    batch = make_batch(model, synth_dir, "prompt", indices=(0, 3))
    ours = model.generate(embed_batch(model, batch), max_new_tokens=16, greedy=True).tokens
    model.hf.model.rope_deltas = None
    theirs = model.hf.generate(**hf_kwargs(model, batch), do_sample=False, max_new_tokens=16,
                               pad_token_id=model.pad_token_id, eos_token_id=model.eos_token_id)
    theirs = theirs[:, batch.input_ids.shape[1]:]
    assert torch.equal(ours[:, : theirs.shape[1]], theirs)


def test_embed_rejects_mismatched_video(loaded_models, synth_dir):
    model = loaded_models["qwen2_vl"]
    batch = make_batch(model, synth_dir, "prompt", indices=(0,))
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    short = VideoEmbeddings(video.embeds[:-1], video.grid_thw)
    with pytest.raises(ValueError, match="vision tokens"):
        model.embed(batch.input_ids, batch.attention_mask, short)


@pytest.mark.parametrize(("kwargs", "message"), [({"max_new_tokens": 0}, "max_new_tokens"), ({"top_p": 0.0}, "top_p"),
                                                 ({"temperature": -1.0}, "temperature")])
def test_generate_rejects_bad_arguments(kwargs, message, loaded_models, synth_dir):
    model = loaded_models["qwen2_vl"]
    batch = make_batch(model, synth_dir, "prompt", indices=(0,))
    with pytest.raises(ValueError, match=message):
        model.generate(embed_batch(model, batch), **{"max_new_tokens": 4, **kwargs})


def test_top_p_keeps_the_nucleus_in_vocabulary_order():
    from lightning_longrl.models.video_lm import _filter_logits

    logits = torch.log(torch.tensor([[0.05, 0.5, 0.05, 0.3, 0.1]]))
    kept = _filter_logits(logits, top_p=0.75, top_k=0).isfinite()[0].tolist()
    assert kept == [False, True, False, True, False]  # 0.5 + 0.3 crosses 0.75
    assert _filter_logits(logits, top_p=1.0, top_k=2).isfinite()[0].tolist() == [False, True, False, True, False]


@torch.no_grad()
def test_generation_in_training_mode_with_gradient_checkpointing(tiny_checkpoints, synth_dir):
    """GRPO samples while the policy is in training mode; checkpointed layers there drop the KV
    cache unless generate() switches to eval mode, which it must also undo afterwards."""
    model = VideoLanguageModel.from_pretrained(tiny_checkpoints["qwen2_5_vl"]).eval()
    batch = make_batch(model, synth_dir, "prompt", indices=(0, 3))
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    inputs = model.embed(batch.input_ids, batch.attention_mask, video)
    reference = model.generate(inputs, max_new_tokens=16, greedy=True)
    model.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    in_training = model.generate(inputs, max_new_tokens=16, greedy=True, num_samples=2)
    assert model.training
    assert torch.equal(in_training.tokens[::2], reference.tokens) and torch.equal(in_training.tokens[1::2], reference.tokens)
