"""The upstream behaviours this package works around, each asserted as it is today.

When one of these tests fails, upstream has changed: the workaround it names can probably be
deleted (and the test with it).

* own M-RoPE (``models/mrope.py``): transformers' ``get_rope_index`` continues the text after a
  video from ``start + max(h, w) / merge``, not from the largest position used plus one;
* own collectives (``parallel/collectives.py``): ``torch.distributed.nn.functional.all_to_all``
  on gloo fails in a group that does not start at global rank 0;
* own clipping (``parallel/grads.py``): ``torch.nn.utils.clip_grad_norm_`` refuses a mix of
  DTensor (FSDP2-sharded) and plain gradients.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_longrl.models.mrope import mrope_position_ids
from lightning_longrl.models.video_lm import VideoLanguageModel

from helpers import free_port


def test_transformers_rope_index_still_differs_after_a_video(tiny_checkpoints):
    model = VideoLanguageModel.from_pretrained(str(tiny_checkpoints["qwen2_5_vl"]))
    config = model.hf.config
    merge = config.vision_config.spatial_merge_size
    grid = torch.tensor([[8, 4, 4]])  # 8 temporal patches of 4 x 4 patches: 8 x 2 x 2 tokens
    video_tokens = int(grid.prod() // merge**2)
    before, after = 5, 6
    ids = torch.tensor([[1] * before + [config.video_token_id] * video_tokens + [1] * after])
    mask = torch.ones_like(ids)
    types = (ids == config.video_token_id).int() * 2  # text 0, video 2
    spg = torch.tensor([1.0])
    theirs, _ = model.hf.model.get_rope_index(ids, types, video_grid_thw=grid, second_per_grid_ts=spg, attention_mask=mask)
    ours = mrope_position_ids(ids, mask, config.video_token_id, grid, merge,
                              temporal_scale=spg.double() * config.vision_config.tokens_per_second)
    end = before + video_tokens
    assert torch.equal(theirs[:, :, :end], ours[:, :, :end]), "up to the video's end both must agree"
    assert int(ours[0, 0, end]) == int(ours[:, 0, :end].max()) + 1, "ours: text continues from the largest position + 1"
    assert not torch.equal(theirs[:, :, end:], ours[:, :, end:]), (
        "transformers now places text after a video like Qwen's reference code: models/mrope.py may be replaceable")


@pytest.mark.slow
def test_torch_collectives_and_clipping_still_need_ours(tmp_path):
    script = Path(__file__).with_name("upstream_collectives_check.py")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(script)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = {r["rank"]: r for r in (json.loads(f.read_text()) for f in sorted(tmp_path.glob("rank*.json")))}
    assert sorted(rows) == [0, 1]
    assert all(r["ours"] == "ok" and r["ours_clip"] == "ok" for r in rows.values())
    assert rows[0]["upstream"] == "ok", "in the group of global rank 0 upstream works"
    assert "not part of group" in rows[1]["upstream"], (
        "torch.distributed.nn.functional.all_to_all now works in any group: parallel/collectives.py may be replaceable")
    assert all("mixed" in r["upstream_clip"] for r in rows.values()), (
        "clip_grad_norm_ now takes DTensor and plain gradients together: parallel/grads.py may be replaceable")
