import re

import numpy as np
import pytest
import torch

from lightning_longrl.data import prompts
from lightning_longrl.data.collate import IGNORE_INDEX, VideoQACollator, frame_interval, timing_metadata
from lightning_longrl.data.dataset import SkippedSample, VideoQADataset
from lightning_longrl.data.video import FrameSampling


def dataset_for(model, synth_dir, num_frames=12):
    m = model.frame_size_multiple
    return VideoQADataset(synth_dir / "train.jsonl", FrameSampling(num_frames=num_frames, max_pixels=(2 * m) ** 2, size_multiple=m))


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_sft_batch_expands_video_tokens_and_masks_prompt(arch, loaded_models, synth_dir):
    model = loaded_models[arch]
    data = dataset_for(model, synth_dir)
    batch = VideoQACollator(model.processor, mode="sft")([data[0], data[1]])
    merge = model.spatial_merge_size
    for row in range(len(batch)):
        video_tokens = int((batch.input_ids[row] == model.hf.config.video_token_id).sum())
        assert video_tokens == int(batch.grid_thw[row].prod()) // merge**2
        target = batch.labels[row][batch.labels[row] != IGNORE_INDEX]
        expected = prompts.format_response(batch.records[row]) + "<|im_end|>"
        assert model.tokenizer.decode(target) == expected
        # targets sit at the end of the real tokens (right padding) and are the input ids there
        n = int(batch.attention_mask[row].sum())
        assert batch.attention_mask[row, :n].all() and not batch.attention_mask[row, n:].any()
        assert torch.equal(batch.input_ids[row, n - len(target) : n], target)
    assert batch.pixel_values.shape[0] == int(batch.grid_thw.prod(-1).sum())
    # frames are 12 uniformly spread over 24 s: 2 s apart, so one temporal patch (2 frames) spans 4 s
    assert batch.second_per_grid_ts.tolist() == pytest.approx([4.0, 4.0])
    assert batch.num_frames == [12, 12]


def test_prompt_batch_is_left_padded_without_labels(loaded_models, synth_dir):
    model = loaded_models["qwen2_5_vl"]
    data = dataset_for(model, synth_dir)
    batch = VideoQACollator(model.processor, mode="prompt")([data[0], data[3]])
    assert batch.labels is None
    assert batch.attention_mask[:, -1].all() and not batch.attention_mask[:, 0].all()
    text = model.tokenizer.decode(batch.input_ids[0][batch.attention_mask[0].bool()])
    assert text.endswith("<|im_start|>assistant\n") and "Question:" in text


def test_qwen3_prompt_carries_real_timestamps(loaded_models, synth_dir):
    model = loaded_models["qwen3_vl"]
    data = dataset_for(model, synth_dir, num_frames=8)
    sample = data[0]
    batch = VideoQACollator(model.processor, mode="prompt")([sample])
    text = model.tokenizer.decode(batch.input_ids[0])
    shown = [float(x) for x in re.findall(r"<([\d.]+) seconds>", text)]
    pairs = sample.timestamps.reshape(-1, 2).mean(1)
    assert shown == pytest.approx(np.round(pairs, 1).tolist())


def test_qwen25_processor_timing_from_metadata_matches_ours(loaded_models, synth_dir):
    model = loaded_models["qwen2_5_vl"]
    sample = dataset_for(model, synth_dir, num_frames=10)[2]
    meta = timing_metadata(sample.timestamps, *sample.frames.shape[1:3])
    out = model.processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[sample.frames], video_metadata=[meta],
                          do_resize=False, do_sample_frames=False, cap_pixels_per_frame=False, return_tensors="pt")
    assert float(out["second_per_grid_ts"][0]) == pytest.approx(2 * frame_interval(sample.timestamps), rel=1e-3)


def test_metadata_for_a_clip_in_the_middle_of_a_video():
    stamps = np.array([100.25, 100.75, 101.25, 101.75])
    meta = timing_metadata(stamps, 28, 28)
    assert meta.timestamps == pytest.approx(stamps.tolist())
    assert 1 / meta.sampled_fps == pytest.approx(0.5)


def test_skipped_and_overlong_samples_are_reported(loaded_models, synth_dir):
    model = loaded_models["qwen2_vl"]
    data = dataset_for(model, synth_dir)
    good = data[0]
    bad = SkippedSample(data[1].record, "cannot decode")
    batch = VideoQACollator(model.processor, mode="sft")([good, bad])
    assert len(batch) == 1 and batch.skipped == [(data[1].record.id, "cannot decode")]
    tight = VideoQACollator(model.processor, mode="sft", max_length=10)([good])
    assert len(tight) == 0 and "exceed max_length=10" in tight.skipped[0][1]
    assert tight.input_ids.shape == (0, 0)


def test_first_questions_of_a_batch_are_the_batch_of_those_questions(loaded_models, synth_dir):
    """VideoBatch.first(n) (GRPO trims batches to what every rank can read) keeps each question's own
    patches and fields, exactly as collating those questions alone, left padding aside."""
    model = loaded_models["qwen2_5_vl"]
    data = dataset_for(model, synth_dir)
    collate = VideoQACollator(model.processor, mode="prompt")
    whole = collate([data[3], data[0], data[1]])  # data[3]'s prompt differs in length from the others
    alone = collate([data[3], data[0]])
    cut = whole.first(2)
    assert len(cut) == 2 and whole.first(3) is whole
    assert torch.equal(cut.pixel_values, alone.pixel_values)
    assert torch.equal(cut.grid_thw, alone.grid_thw) and cut.media_keys == alone.media_keys
    assert [r.id for r in cut.records] == [r.id for r in alone.records]
    for row in range(2):
        real = cut.attention_mask[row].bool()
        assert torch.equal(cut.input_ids[row][real], alone.input_ids[row][alone.attention_mask[row].bool()])
    assert len(whole.first(0)) == 0 and whole.first(0).pixel_values.shape[0] == 0
