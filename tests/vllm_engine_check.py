"""Run by tests/test_vllm_engine.py in its own process (vLLM's CPU backend pins the process's threads).

With one tiny checkpoint and the same cached embeddings of a mixed batch (a video, one image, two
images and a text-only question), measures:
- greedy tokens of vLLM and of the package's own generation, and vLLM's prompt ids, per question;
- the largest gap between the vLLM engine's sampling log-probs and the trainer's log-probs of the
  same tokens, before a training step, after it without a weight sync, and after the sync;
- the same seed giving the same samples.
Prints one JSON line.
usage: python vllm_engine_check.py CHECKPOINT MIXED_DIR
"""

import json
import sys
import time

import torch

from lightning_longrl.data.collate import VideoQACollator
from lightning_longrl.data.dataset import VideoQADataset
from lightning_longrl.data.video import FrameSampling
from lightning_longrl.models.video_lm import VideoLanguageModel
from lightning_longrl.parallel.weights import full_weights
from lightning_longrl.rl.rollout import RolloutRequest, SamplingConfig
from lightning_longrl.rl.vllm_engine import VLLMRolloutEngine

checkpoint, synth_dir = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = VideoLanguageModel.from_pretrained(checkpoint).eval()
multiple = model.frame_size_multiple
dataset = VideoQADataset(f"{synth_dir}/train.jsonl", FrameSampling(num_frames=16, max_pixels=(2 * multiple) ** 2,
                                                                    size_multiple=multiple))
first_of = {}
for i, record in enumerate(dataset.records):
    first_of.setdefault(f"{record.modality}{len(record.images) or ''}", i)
kinds = ["video", "image1", "image2", "text"]
batch = VideoQACollator(model.processor, mode="prompt")([dataset[first_of[k]] for k in kinds])
with torch.no_grad():
    video = model.encode_video(batch.pixel_values, batch.grid_thw, batch.second_per_grid_ts)
videos = video.split(model.spatial_merge_size, batch.visual_items)
G = 4
request = RolloutRequest(batch.input_ids, batch.attention_mask, videos, G)
sampling = SamplingConfig(num_samples=G, max_new_tokens=20, temperature=1.0)

engine = VLLMRolloutEngine(model)
engine.weights_provider = lambda: full_weights(model.hf)


def trainer_gap(generation) -> float:
    """Largest |engine log-prob - trainer log-prob| over the generated tokens."""
    with torch.no_grad():
        prompts = model.embed(batch.input_ids, batch.attention_mask, video)
        rows = torch.arange(len(batch)).repeat_interleave(G)
        scores = model.score_responses(prompts, rows, generation.tokens, generation.mask, sampling.temperature,
                                       exclude_vision_tokens=True)
    return float(((scores.logprobs - generation.logprobs).abs() * generation.mask).max())


began = time.perf_counter()
first = engine.generate(request, sampling, torch.Generator().manual_seed(1))
start_seconds = time.perf_counter() - began
again = engine.generate(request, sampling, torch.Generator().manual_seed(1))
other = engine.generate(request, sampling, torch.Generator().manual_seed(2))
result = {
    "rows": first.tokens.shape[0],
    "start_seconds": start_seconds,
    "same_seed_same_tokens": bool(torch.equal(first.tokens, again.tokens)),
    "other_seed_other_tokens": not torch.equal(first.tokens, other.tokens),
    "banned_sampled": int(torch.isin(first.tokens[first.mask], torch.tensor(model.banned_token_ids)).sum()),
    "gap_before": trainer_gap(first),
    "generated_tokens": int(first.mask.sum()),
}

# greedy: vLLM from the cached embeddings vs the package's own generate on the same video
from vllm import SamplingParams  # noqa: E402

greedy = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop_token_ids=[model.eos_token_id],
                        logit_bias=engine._ban, detokenize=False)
result["kinds"] = kinds
for key in ("greedy_ours", "greedy_vllm", "prompt_tokens", "our_prompt_tokens", "prompt_ids_equal"):
    result[key] = []
for i in range(len(batch)):
    with torch.no_grad():
        inputs = model.embed(batch.input_ids[i : i + 1], batch.attention_mask[i : i + 1], videos[i])
        ours = model.generate(inputs, max_new_tokens=24, greedy=True)
    out = engine.llm.generate([engine._prompt(request, i)], greedy, use_tqdm=False)[0]
    result["greedy_ours"].append(ours.tokens[0][ours.mask[0]].tolist())
    result["greedy_vllm"].append(list(out.outputs[0].token_ids))
    result["prompt_tokens"].append(len(out.prompt_token_ids))
    result["our_prompt_tokens"].append(int(batch.attention_mask[i].sum()))
    result["prompt_ids_equal"].append(list(out.prompt_token_ids) == batch.input_ids[i][batch.attention_mask[i].bool()].tolist())

# one training step moves the weights: raise the log-probability of the first rollout's tokens
model.train()
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
prompts = model.embed(batch.input_ids, batch.attention_mask, video)
rows = torch.arange(len(batch)).repeat_interleave(G)
scores = model.score_responses(prompts, rows, first.tokens, first.mask, exclude_vision_tokens=True)
(-(scores.logprobs * first.mask).sum() / first.mask.sum()).backward()
optimizer.step()
model.eval()
stale = engine.generate(request, sampling, torch.Generator().manual_seed(3))
result["gap_without_sync"] = trainer_gap(stale)
began = time.perf_counter()
engine.load_weights(full_weights(model.hf))
result["sync_seconds"] = time.perf_counter() - began
synced = engine.generate(request, sampling, torch.Generator().manual_seed(3))
result["gap_after_sync"] = trainer_gap(synced)

# LoRA: moved adapters on the language model; the engine gets the merged weights under the
# original names (what GRPOModule.policy_weights sends) and must agree with the adapted trainer
from lightning_longrl.models.lora import LoRAConfig, adapter_scalings, apply_lora, merged_weights  # noqa: E402

apply_lora(model.hf, model.language_model, model.vision_tower, LoRAConfig(rank=4))
moved = torch.Generator().manual_seed(0)
for name, param in model.named_parameters():
    if ".lora_B." in name:
        param.data.copy_(0.05 * torch.randn(param.shape, generator=moved))
model.eval()
stale = engine.generate(request, sampling, torch.Generator().manual_seed(4))
result["gap_lora_without_sync"] = trainer_gap(stale)
engine.load_weights(merged_weights(full_weights(model.hf), adapter_scalings(model.hf)))
result["gap_lora_merged"] = trainer_gap(engine.generate(request, sampling, torch.Generator().manual_seed(4)))
result["builds"] = engine.builds
print(json.dumps(result))
