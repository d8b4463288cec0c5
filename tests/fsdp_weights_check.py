"""Run by tests/test_weights.py under torchrun with 2 CPU processes (gloo).

Shards a tiny checkpoint's decoder layers and the whole model with FSDP2 (``fully_shard``), then
gathers the policy's weights with ``full_weights`` as VLLMWeightSync does. Rank 0 prints one JSON line
per rank: whether the model was sharded and whether every gathered tensor equals the unsharded one.
usage: torchrun --nproc_per_node 2 fsdp_weights_check.py CHECKPOINT
"""

import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from lightning_longrl.models.video_lm import VideoLanguageModel
from lightning_longrl.parallel.weights import full_weights, is_sharded

from helpers import print_from_rank0  # noqa: E402  (tests/ is this script's folder)


class Root(torch.nn.Module):
    """Stands for the LightningModule the strategy wraps (the policy sits inside it)."""

    def __init__(self, model: VideoLanguageModel) -> None:
        super().__init__()
        self.model = model


def main() -> None:
    dist.init_process_group("gloo")
    model = VideoLanguageModel.from_pretrained(sys.argv[1])
    expected = {name: p.detach().clone() for name, p in model.hf.named_parameters()}
    root = Root(model)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.hf.model.language_model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(root, mesh=mesh)
    local = {name: p.to_local().numel() for name, p in model.hf.named_parameters()}
    got = dict(full_weights(model.hf, root))
    print_from_rank0({
        "rank": dist.get_rank(), "sharded": is_sharded(root),
        "local_smaller": sum(local.values()) < sum(t.numel() for t in expected.values()),
        "same_names": sorted(got) == sorted(expected),
        "max_diff": max(float((got[k] - v).abs().max()) for k, v in expected.items() if k in got),
    })
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
