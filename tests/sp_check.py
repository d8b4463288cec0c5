"""Run by tests/test_sequence_parallel.py under torchrun with N CPU processes (gloo).

The world is split into sequence-parallel groups of SP ranks (N / SP data-parallel groups; each
group takes its own two questions). Every rank computes, for its group's batch, once in plain
single-process form and once sequence-parallel:
- the video embeddings (frames split across the group, all-gathered),
- per-token log-probs and entropies of the SFT targets (Ulysses attention, sliced scoring),
- a GRPO loss on those log-probs and the gradients of every trainable parameter (summed over
  the group, as data-parallel all-reduce over the whole world does).
Rank 0 prints one JSON line per rank with the largest differences.
usage: torchrun --nproc_per_node N sp_check.py CHECKPOINT SYNTH_DIR SP FRAMES
"""

import sys

import torch
import torch.distributed as dist

from lightning_longrl.data.collate import VideoQACollator
from lightning_longrl.data.dataset import VideoQADataset
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.models.video_lm import VideoLanguageModel
from lightning_longrl.parallel.encode import sp_encode_video
from lightning_longrl.parallel.sequence import sp_hidden_states, sp_score_targets
from lightning_longrl.rl.objective import GRPOLossConfig, grpo_loss

from helpers import print_from_rank0  # noqa: E402  (tests/ is this script's folder)


def main() -> None:
    checkpoint, synth_dir, sp, frames = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    groups = [dist.new_group(list(range(g * sp, (g + 1) * sp))) for g in range(world // sp)]
    dp_rank = rank // sp
    group = groups[dp_rank]
    torch.manual_seed(0)
    model = VideoLanguageModel.from_pretrained(checkpoint)  # float32, eval mode (no dropout)
    multiple = model.frame_size_multiple
    dataset = VideoQADataset(f"{synth_dir}/train.jsonl", FrameSampling(num_frames=frames, max_pixels=(2 * multiple) ** 2,
                                                                        size_multiple=multiple))
    batch = VideoQACollator(model.processor, mode="sft")([dataset[2 * dp_rank], dataset[2 * dp_rank + 1]])
    targets = batch.labels != -100
    params = [p for p in model.parameters() if p.requires_grad]
    config = GRPOLossConfig(kl_coef=0.0)
    advantages = torch.tensor([1.0, -0.5])

    def loss_of(logprobs):
        old = logprobs.detach() + 0.05 * torch.sin(torch.arange(logprobs.numel()).view_as(logprobs).float())
        return grpo_loss(config, logprobs, old, advantages, targets).loss

    # plain: one process computes everything
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
    inputs = model.embed(batch.input_ids, batch.attention_mask, video)
    scores = model.score_targets(model.hidden_states(inputs), batch.input_ids, targets, entropy=True)
    loss = loss_of(scores.logprobs)
    plain_grads = torch.autograd.grad(loss, params)

    # sequence parallel
    sp_video = sp_encode_video(model, batch.pixel_values, batch.grid_thw, group, batch.second_per_grid_ts)
    sp_inputs = model.embed(batch.input_ids, batch.attention_mask, sp_video)
    hidden, shard = sp_hidden_states(model, sp_inputs, group)
    sp_scores = sp_score_targets(model, hidden, shard, batch.input_ids, targets, group, entropy=True)
    sp_loss = loss_of(sp_scores.logprobs)
    sp_grads = torch.autograd.grad(sp_loss, params)
    summed = []
    for g in sp_grads:
        g = g.clone()
        dist.all_reduce(g, group=group)
        summed.append(g / sp)  # every rank computed the whole loss: the gather's backward summed sp copies

    def diff(a, b):
        return float((a - b).detach().abs().max())

    # a left-padded batch (prompts, as GRPO scores them): the attention mask path
    prompts = VideoQACollator(model.processor, mode="prompt")([dataset[2 * dp_rank], dataset[2 * dp_rank + 1]])
    prompt_targets = torch.zeros_like(prompts.attention_mask, dtype=torch.bool)
    prompt_targets[:, -8:] = True
    with torch.no_grad():
        p_video = model.encode_video(prompts.pixel_values, prompts.grid_thw, prompts.second_per_grid_ts)
        p_inputs = model.embed(prompts.input_ids, prompts.attention_mask, p_video)
        p_plain = model.score_targets(model.hidden_states(p_inputs), prompts.input_ids, prompt_targets).logprobs
        p_hidden, p_shard = sp_hidden_states(model, p_inputs, group)
        p_sp = sp_score_targets(model, p_hidden, p_shard, prompts.input_ids, prompt_targets, group).logprobs
    left_padded = bool((prompts.attention_mask[:, 0] == 0).any())

    print_from_rank0({
        "rank": rank, "sp": sp, "length": int(batch.input_ids.shape[1]), "local_length": int(hidden.shape[1]),
        "padded": shard.padded, "video_tokens": int(video.embeds.shape[0]), "targets": int(targets.sum()),
        "kv_heads": model.language_model.config.num_key_value_heads,
        "embeds": diff(video.embeds, sp_video.embeds),
        "deepstack_levels": len(video.deepstack),
        "deepstack": max([diff(a, b) for a, b in zip(video.deepstack, sp_video.deepstack)], default=0.0),
        "logprobs": diff(scores.logprobs, sp_scores.logprobs),
        "entropy": diff(scores.entropy, sp_scores.entropy), "loss": abs(float(loss) - float(sp_loss)),
        "grads": max(diff(a, b) for a, b in zip(plain_grads, summed)),
        "grad_scale": max(float(a.abs().max()) for a in plain_grads),
        "left_padded": left_padded, "left_padded_logprobs": diff(p_plain, p_sp),
    })
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
