"""Run by tests/test_vllm_serving.py in its own process (vLLM's CPU backend pins the process's threads).

Greedy-decodes one synthetic prompt with the package's own generation and with vLLM fed the same
cached video embeddings; prints both token lists as JSON.
usage: python vllm_greedy_check.py CHECKPOINT SYNTH_DIR
"""

import json
import os
import sys

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process engine
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402

from lightning_longrl.data.collate import VideoQACollator  # noqa: E402
from lightning_longrl.data.dataset import VideoQADataset  # noqa: E402
from lightning_longrl.data.video import FrameSampling  # noqa: E402
from lightning_longrl.models.video_lm import VideoLanguageModel  # noqa: E402

checkpoint, synth_dir = sys.argv[1], sys.argv[2]
model = VideoLanguageModel.from_pretrained(checkpoint).eval()
multiple = model.frame_size_multiple
sample = VideoQADataset(f"{synth_dir}/train.jsonl", FrameSampling(num_frames=16, max_pixels=(2 * multiple) ** 2,
                                                                   size_multiple=multiple))[0]
collator = VideoQACollator(model.processor, mode="prompt")
batch = collator([sample])
with torch.no_grad():
    video = model.encode_video(batch.pixel_values_videos, batch.video_grid_thw)
    inputs = model.embed(batch.input_ids, batch.attention_mask, video, batch.second_per_grid_ts)
    ours = model.generate(inputs, max_new_tokens=24, greedy=True)
ours_tokens = ours.tokens[0][ours.mask[0]].tolist()

from vllm import LLM, SamplingParams  # noqa: E402

llm = LLM(model=checkpoint, distributed_executor_backend="uni", dtype="float32", enforce_eager=True, seed=0,
          enable_mm_embeds=True, limit_mm_per_prompt={"video": 1, "image": 0}, max_model_len=4096)
video_data = {"video_embeds": video.embeds, "video_grid_thw": video.grid_thw}
if model.model_type == "qwen2_5_vl":  # Qwen2-VL has no temporal scaling; vLLM would apply one if given
    video_data["second_per_grid_ts"] = batch.second_per_grid_ts
out = llm.generate({"prompt": collator.prompt_text(sample.record), "multi_modal_data": {"video": video_data}},
                   SamplingParams(temperature=0.0, max_tokens=24), use_tqdm=False)
print(json.dumps({"ours": ours_tokens, "vllm": list(out[0].outputs[0].token_ids),
                  "prompt_tokens": len(out[0].prompt_token_ids), "our_prompt_tokens": int(batch.attention_mask.sum())}))
