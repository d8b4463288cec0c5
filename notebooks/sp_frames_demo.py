"""Run by notebooks/long_video_rl_internals.ipynb under torchrun with 2 CPU processes (gloo):
one video's frames split across a sequence-parallel group of 2, and the sequence-parallel
prefill, each compared with the single-process computation. Rank 0 prints one JSON line.

usage: torchrun --nproc_per_node 2 sp_frames_demo.py CHECKPOINT RECORDS_FILE FRAMES
"""

import json
import sys

import torch
import torch.distributed as dist

from lightning_longrl.data.collate import VideoQACollator
from lightning_longrl.data.dataset import VideoQADataset
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.models.video_lm import VideoLanguageModel
from lightning_longrl.parallel.encode import sp_encode_video
from lightning_longrl.parallel.sequence import sp_hidden_states, sp_score_targets


def main() -> None:
    checkpoint, records, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    group = dist.new_group(list(range(size)))
    model = VideoLanguageModel.from_pretrained(checkpoint)
    multiple = model.frame_size_multiple
    dataset = VideoQADataset(records, FrameSampling(num_frames=frames, max_pixels=(2 * multiple) ** 2,
                                                    size_multiple=multiple))
    batch = VideoQACollator(model.processor, mode="sft")([dataset[0]])
    temporal = int(batch.grid_thw[0, 0])  # temporal patches (2 frames each)
    share = -(-temporal // size)
    mine = [i for i in range(rank * share, (rank + 1) * share)]
    with torch.no_grad():
        plain_video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
        sp_video = sp_encode_video(model, batch.pixel_values, batch.grid_thw, group, batch.second_per_grid_ts)
        targets = batch.labels != -100
        inputs = model.embed(batch.input_ids, batch.attention_mask, plain_video)
        plain = model.score_targets(model.hidden_states(inputs), batch.input_ids, targets)
        hidden, shard = sp_hidden_states(model, inputs, group)
        parallel = sp_score_targets(model, hidden, shard, batch.input_ids, targets, group)
    row = {
        "rank": rank,
        "temporal_patches": temporal,
        "encoded_patches": [i if i < temporal else f"{temporal - 1} (padding copy)" for i in mine],
        "sequence_length": int(batch.input_ids.shape[1]),
        "my_positions": [shard.start, shard.end],
        "embedding_max_diff": float((sp_video.embeds - plain_video.embeds).abs().max()),
        "logprob_max_diff": float((parallel.logprobs - plain.logprobs).abs().max()),
    }
    rows = [None] * size
    dist.all_gather_object(rows, row)
    if rank == 0:
        print(json.dumps(rows), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
