"""Image and text-only questions, alone and mixed with videos in one batch, per architecture:
reading images as users bring them, the collator's batch, and the cached path (encode once, embed,
score) against Hugging Face's own forward with pixels (float32, <= 1e-5)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_longrl.data.collate import IGNORE_INDEX, VideoQACollator
from lightning_longrl.data.dataset import SkippedSample, VideoQADataset, VideoSample
from lightning_longrl.data.image import ImageDecodeError, read_image
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.inference.batch_ops import encode_batch, sample_responses
from lightning_longrl.models.video_lm import VideoEmbeddings
from lightning_longrl.rl.rollout import PolicyRolloutEngine, SamplingConfig
from lightning_longrl.synth.tiny_model import ARCHITECTURES

from helpers import reference_logprobs  # noqa: E402  (tests/ is on sys.path)

TOL = 1e-5


def sampling_for(model, frames=8):
    m = model.frame_size_multiple
    return FrameSampling(num_frames=frames, max_pixels=(3 * m) ** 2, size_multiple=m)


def mixed_samples(model, mixed_dir, split="train"):
    """One video, one single-image, one two-image and one text-only question of the split."""
    dataset = VideoQADataset(mixed_dir / f"{split}.jsonl", sampling_for(model))
    pick = {}
    for i, record in enumerate(dataset.records):
        kind = f"{record.modality}{len(record.images) or ''}"
        pick.setdefault(kind, i)
    assert set(pick) == {"video", "image1", "image2", "text"}, pick
    return [dataset[pick[k]] for k in ("video", "image1", "image2", "text")]


def hf_forward_logits(model, batch, positions):
    """Hugging Face's forward with pixels: images and videos given apart, as its processor returns them."""
    kinds = [r.modality for r, n in zip(batch.records, batch.visual_items) for _ in range(n)]
    items = batch.pixel_values.split(batch.grid_thw.prod(-1).tolist())
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, mm_token_type_ids=batch.mm_token_type_ids)
    for kind, pixels_key, grid_key in (("image", "pixel_values", "image_grid_thw"), ("video", "pixel_values_videos", "video_grid_thw")):
        chosen = [i for i, k in enumerate(kinds) if k == kind]
        if chosen:
            kwargs[pixels_key] = torch.cat([items[i] for i in chosen])
            kwargs[grid_key] = batch.grid_thw[chosen]
    if model.model_type == "qwen2_5_vl" and "video_grid_thw" in kwargs:
        kwargs["second_per_grid_ts"] = batch.second_per_grid_ts[[i for i, k in enumerate(kinds) if k == "video"]]
    model.hf.model.rope_deltas = None
    return model.hf(**kwargs, position_ids=positions).logits


# ------------------------------------------------------------------------------------ records
def test_mixed_split_reads_every_kind(loaded_models, mixed_dir):
    model = loaded_models["qwen2_vl"]
    samples = mixed_samples(model, mixed_dir)
    video, one, two, text = samples
    assert video.frames is not None and video.images == ()
    assert one.frames is None and len(one.images) == 1 and len(two.images) == 2
    assert text.frames is None and text.images == () and text.timestamps is None
    m = model.frame_size_multiple
    for image in (*one.images, *two.images):
        assert image.dtype == np.uint8 and image.shape[2] == 3 and image.shape[0] % m == 0 and image.shape[1] % m == 0


# ------------------------------------------------------------------------------------ images as users bring them
def _photo(path, array, **save):
    Image.fromarray(array).save(path, **save)
    return path


def test_read_image_turns_exif_rotated_photos_upright(tmp_path):
    """A phone photo stores its pixels sideways with an EXIF orientation; viewers (and the model) see it upright."""
    pixels = np.zeros((56, 112, 3), dtype=np.uint8)  # landscape as stored, red left half
    pixels[:, :56] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    sampling = FrameSampling(num_frames=1, max_pixels=112 * 112, size_multiple=28)
    image = read_image(path, sampling)
    assert image.shape == (112, 56, 3)  # displayed portrait
    assert image[:28, :, 0].mean() > 200 and image[-28:, :, 0].mean() < 60  # the red half is now on top


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("RGBA", ".png"), ("P", ".gif"), ("CMYK", ".jpg"), ("RGB", ".webp")])
def test_read_image_accepts_common_modes_and_formats(tmp_path, mode, suffix):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (30, 45, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"x{suffix}"
    image.save(path)
    out = read_image(path, FrameSampling(num_frames=1, max_pixels=56 * 56, size_multiple=28))
    assert out.dtype == np.uint8 and out.shape[2] == 3 and out.shape[0] % 28 == 0 and out.shape[1] % 28 == 0


def test_unreadable_images_are_skipped_with_the_reason(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _photo(tmp_path / "good.png", np.zeros((28, 28, 3), dtype=np.uint8))
    rows = [{"id": "a", "images": ["good.png", "broken.png"], "question": "q?", "answer": "x"},
            {"id": "b", "image": "missing.png", "question": "q?", "answer": "x"},
            {"id": "c", "image": "good.png", "question": "q?", "answer": "x"}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoQADataset(tmp_path / "r.jsonl", FrameSampling(num_frames=1, max_pixels=56 * 56, size_multiple=28))
    a, b, c = dataset[0], dataset[1], dataset[2]
    assert isinstance(a, SkippedSample) and "broken.png" in a.reason and "not a readable image" in a.reason
    assert isinstance(b, SkippedSample) and "missing.png" in b.reason and "not found" in b.reason
    assert isinstance(c, VideoSample) and len(c.images) == 1
    with pytest.raises(ImageDecodeError, match="broken.png"):
        read_image(tmp_path / "broken.png", FrameSampling(num_frames=1))


def test_long_rl_image_and_text_records_through_the_collator(tmp_path, loaded_models):
    """Long-RL's released shape: `problem` with an `<image>` placeholder, `images` as a list, answers in tags."""
    model = loaded_models["qwen2_5_vl"]
    _photo(tmp_path / "g.png", np.full((60, 90, 3), 128, dtype=np.uint8))
    rows = [{"problem": "<image>Find AC.", "images": ["g.png"], "answer": "<answer>48</answer>"},
            {"problem": "What is 2 + 3?", "answer": "5", "images": []}]
    (tmp_path / "lr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoQADataset(tmp_path / "lr.jsonl", sampling_for(model))
    batch = VideoQACollator(model.processor, mode="prompt", think=False)([dataset[0], dataset[1]])
    assert batch.visual_items == [1, 0] and [r.modality for r in batch.records] == ["image", "text"]
    image_tokens = (batch.input_ids == model.hf.config.image_token_id).sum(-1).tolist()
    assert image_tokens == [int(batch.grid_thw[0].prod()) // model.spatial_merge_size**2, 0]
    assert not (batch.input_ids == model.hf.config.video_token_id).any()
    text = model.tokenizer.decode(batch.input_ids[0][batch.attention_mask[0].bool()])
    assert "<image>" not in text and "Find AC." in text
    assert batch.media_keys[1] == "text:" and batch.media_keys[0].startswith("images:g.png#")


# ------------------------------------------------------------------------------------ the cached path
@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_mixed_batch_cached_path_equals_plain_forward(arch, loaded_models, mixed_dir):
    """A video, one image, two images and a text-only question in one SFT batch."""
    model = loaded_models[arch]
    batch = VideoQACollator(model.processor, mode="sft")(mixed_samples(model, mixed_dir))
    assert batch.visual_items == [1, 1, 2, 0]
    assert batch.grid_thw[1:, 0].tolist() == [1, 1, 1]  # an image is one temporal patch
    mask = batch.labels != IGNORE_INDEX
    media = encode_batch(model, batch)
    inputs = model.embed(batch.input_ids, batch.attention_mask, media)
    ours = model.token_logprobs(inputs, batch.input_ids, mask)
    ref = reference_logprobs(hf_forward_logits(model, batch, inputs.position_ids), batch.input_ids, mask)
    assert mask.sum(-1).min() > 5
    assert (ours - ref).abs().max().item() <= TOL
    # per question, the embeddings split into the question's own items
    parts = media.split(model.spatial_merge_size, batch.visual_items)
    assert [p.num_items for p in parts] == [1, 1, 2, 0] and parts[3].embeds.shape[0] == 0
    # the first questions of a mixed batch carry exactly their own items
    head = batch.first(3)
    assert head.visual_items == [1, 1, 2] and head.grid_thw.shape[0] == 4
    assert head.pixel_values.shape[0] == int(head.grid_thw.prod(-1).sum()) == batch.pixel_values.shape[0]
    assert batch.first(2).grid_thw.shape[0] == 2 and batch.first(2).second_per_grid_ts.shape[0] == 2
    # the check can fail: the two-image question's images in the wrong order change the numbers
    items = media.split(model.spatial_merge_size)
    swapped = VideoEmbeddings.cat([items[0], items[1], items[3], items[2]])
    moved = model.token_logprobs(model.embed(batch.input_ids, batch.attention_mask, swapped), batch.input_ids, mask)
    assert (moved - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_image_and_text_positions_equal_transformers(arch, loaded_models, mixed_dir):
    """Without a video in the batch, transformers' own M-RoPE rule gives the same positions (it
    differs only after videos), so its plain forward is the reference with its own positions."""
    model = loaded_models[arch]
    batch = VideoQACollator(model.processor, mode="sft")(mixed_samples(model, mixed_dir)[1:])
    ours = model.position_ids(batch.input_ids, batch.attention_mask, batch.grid_thw, batch.second_per_grid_ts)
    theirs, _ = model.hf.model.get_rope_index(batch.input_ids, batch.mm_token_type_ids, image_grid_thw=batch.grid_thw,
                                              attention_mask=batch.attention_mask)
    real = batch.attention_mask.bool()
    assert torch.equal(ours[:, real], theirs[:, real])
    mask = batch.labels != IGNORE_INDEX
    inputs = model.embed(batch.input_ids, batch.attention_mask, encode_batch(model, batch))
    ours_lp = model.token_logprobs(inputs, batch.input_ids, mask)
    model.hf.model.rope_deltas = None
    logits = model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixel_values,
                      image_grid_thw=batch.grid_thw, mm_token_type_ids=batch.mm_token_type_ids).logits
    assert (ours_lp - reference_logprobs(logits, batch.input_ids, mask)).abs().max().item() <= TOL


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_text_only_batch_runs_no_vision_tower(arch, loaded_models, mixed_dir):
    model = loaded_models[arch]
    text = [s for s in mixed_samples(model, mixed_dir)][3:]
    batch = VideoQACollator(model.processor, mode="sft")(text)
    assert batch.grid_thw.shape == (0, 3) and batch.pixel_values.shape[0] == 0
    calls = []
    hook = model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        media = encode_batch(model, batch)
    finally:
        hook.remove()
    assert calls == [] and media.num_items == 0
    mask = batch.labels != IGNORE_INDEX
    ours = model.token_logprobs(model.embed(batch.input_ids, batch.attention_mask, media), batch.input_ids, mask)
    model.hf.model.rope_deltas = None
    logits = model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      mm_token_type_ids=batch.mm_token_type_ids).logits
    assert (ours - reference_logprobs(logits, batch.input_ids, mask)).abs().max().item() <= TOL


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_mixed_prompts_sample_from_the_cached_embeddings(arch, loaded_models, mixed_dir):
    """Rollouts of a left-padded mixed batch: the engine's sampled log-probs equal a teacher-forced
    pass over the same embeddings (the GRPO ratio starts at 1 on every kind of question)."""
    model = loaded_models[arch]
    batch = VideoQACollator(model.processor, mode="prompt")(mixed_samples(model, mixed_dir))
    g = 2
    media = encode_batch(model, batch)
    from lightning_longrl.rl.rollout import RolloutRequest

    request = RolloutRequest(batch.input_ids, batch.attention_mask, media.split(model.spatial_merge_size, batch.visual_items), g)
    sampling = SamplingConfig(num_samples=g, max_new_tokens=8, temperature=1.0)
    generation = PolicyRolloutEngine(model).generate(request, sampling, torch.Generator().manual_seed(0))
    prompts = model.embed(batch.input_ids, batch.attention_mask, media)
    rows = torch.arange(len(batch)).repeat_interleave(g)
    scores = model.score_responses(prompts, rows, generation.tokens, generation.mask, exclude_vision_tokens=True)
    assert ((scores.logprobs - generation.logprobs).abs() * generation.mask).max().item() <= TOL
    texts = sample_responses(model, PolicyRolloutEngine(model), batch, sampling, torch.Generator().manual_seed(0))
    assert len(texts) == len(batch) * g


# ------------------------------------------------------------------------------------ stages and tools
def test_sft_and_grpo_fit_mixed_batches_in_one_process(tmp_path, tiny_checkpoints, mixed_dir):
    """SFT then GRPO (policy engine, embedding cache) on batches that mix videos, images and
    text-only questions; the cache holds the images' embeddings beside the videos'."""
    import math

    from helpers import grpo_run, sft_run

    checkpoint = tiny_checkpoints["qwen3_vl"]  # deepstack features for images too
    trainer, module, data = sft_run(tmp_path / "sft", checkpoint, mixed_dir, max_steps=4, batch_size=3)
    trainer.fit(module, data)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_longrl.callbacks import RolloutSampleLogger

    trainer, module, data = grpo_run(tmp_path / "grpo", checkpoint, mixed_dir, max_steps=4, batch_size=3,
                                     trainer_kwargs={"callbacks": [RolloutSampleLogger(every_n_steps=1, max_questions=3)]})
    seen = []
    module.on_train_batch_start = lambda batch, i: seen.extend(r.modality for r in batch.records)
    trainer.fit(module, data)
    assert set(seen) == {"video", "image", "text"}
    keys = [key for _, key, _ in module.cache._entries]
    assert any(k.startswith("images:") for k in keys) and any("[None:None]#" in k for k in keys) and "text:" in keys
    images = [e for (_, key, _), e in module.cache._entries.items() if key.startswith("images:")]
    assert all(e.num_items >= 1 and len(e.deepstack) > 0 and (e.grid_thw[:, 0] == 1).all() for e in images)
    assert math.isfinite(float(trainer.callback_metrics["policy/loss"]))
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert any(t.startswith("rollouts/frames_") for t in tags) and any(t.startswith("rollouts/image_") for t in tags)


def test_eval_answers_every_kind_of_question(tmp_path, tiny_checkpoints, mixed_dir):
    from lightning_longrl.eval.runner import EvalConfig, evaluate

    config = EvalConfig(model=str(tiny_checkpoints["qwen2_vl"]), data=str(mixed_dir / "test.jsonl"),
                        output_dir=str(tmp_path / "eval"), num_frames=8, max_pixels=56 * 56, max_new_tokens=8,
                        batch_size=3, num_workers=0, progress=False)
    result = evaluate(config)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    records = [json.loads(line) for line in (mixed_dir / "test.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records)
    assert result.metrics["unreadable"] == 0 and result.metrics["questions"] == len(records)
    frames = {r["id"]: r["frames"] for r in rows}
    assert {frames[r["id"]] for r in records if "video" in r} == {8}
    assert {frames[r["id"]] for r in records if "video" not in r} == {0}


def test_checkpoints_from_before_mixed_media_still_load():
    """A dynamic-sampling buffer and an embedding cache saved before the embeddings kept their
    timing: the buffer's per-question seconds move into its embeddings; such cache entries are
    dropped (encoded again when needed)."""
    from lightning_longrl.rl.embedding_cache import VideoEmbeddingCache
    from lightning_longrl.rl.groups import RolloutGroups

    video = {"embeds": torch.ones(4, 8), "grid_thw": torch.tensor([[2, 2, 4]]), "deepstack": []}  # old entry shape
    old = {"prompt_ids": [torch.tensor([1, 2])], "video_keys": ["v.mp4[None:None]#x"], "videos": [video],
           "pixel_values": [None], "second_per_grid_ts": torch.tensor([3.0]), "responses": torch.zeros(2, 3, dtype=torch.long),
           "response_mask": torch.ones(2, 3, dtype=torch.bool), "rollout_logprobs": torch.zeros(2, 3),
           "rewards": torch.zeros(1, 2), "terms": {}, "advantages": None}
    groups = RolloutGroups.from_state_dict(old, torch.device("cpu"))
    assert groups.media_keys == ["v.mp4[None:None]#x"] and groups.videos[0].seconds_per_patch.tolist() == [3.0]
    cache = VideoEmbeddingCache()
    cache.load_state_dict({"versions": {"policy": 2}, "entries": [{"namespace": "policy", "video": "k", "version": 2, **video}]})
    assert len(cache) == 0 and cache.version("policy") == 2
    new = groups.state_dict()
    assert RolloutGroups.from_state_dict(new, torch.device("cpu")).videos[0].seconds_per_patch.tolist() == [3.0]
