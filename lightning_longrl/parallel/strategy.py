"""``MRSPStrategy``: data parallelism over groups of sequence-parallel ranks (MR-SP).

The world of ``N`` processes is a ``(dp, sp)`` device mesh: ``N / sp_size`` data-parallel groups of
``sp_size`` consecutive ranks. Every rank of a sequence-parallel group receives the same batches (the
distributed sampler runs over the data-parallel dimension only); within the group, a video's
frames are encoded in parallel and the prefill runs sequence-parallel (see
:mod:`lightning_longrl.parallel`). Gradients are averaged over the whole world as in DDP: every
rank of a group computes the group's whole loss, and the gathers' backward sums the group's
contributions, so the world average is exactly the data-parallel average.

    trainer:
      strategy:
        class_path: lightning_longrl.parallel.MRSPStrategy
        init_args:
          sp_size: 2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.utilities.device_dtype_mixin import _update_properties
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.nn import Module
from torch.optim import Optimizer
from typing_extensions import override

from lightning_longrl.parallel.weights import is_sharded


class MRSPStrategy(DDPStrategy):
    """DDP whose ranks form sequence-parallel groups of ``sp_size``.

    Args:
        sp_size: ranks per sequence-parallel group (1: plain DDP). Must divide the world size.
        shard_weights: shard parameters, gradients and optimizer state over all ranks with FSDP2
            instead of replicating them, so that 7B models fit (see :func:`shard_model`);
            checkpoints still hold full tensors.
        bucket_mb: size of the buckets in which the replicated (vision-tower) gradients are
            averaged when the weights are sharded.
        **kwargs: passed on to :class:`~lightning.pytorch.strategies.DDPStrategy`.
    """

    strategy_name = "mrsp"

    def __init__(self, sp_size: int = 1, shard_weights: bool = False, bucket_mb: float = 25.0, **kwargs: Any) -> None:
        if sp_size < 1:
            raise ValueError(f"MRSPStrategy sp_size must be >= 1, got {sp_size}")
        if not bucket_mb > 0:
            raise ValueError(f"MRSPStrategy bucket_mb must be > 0, got {bucket_mb}")
        super().__init__(**kwargs)
        self.sp_size = sp_size
        self.shard_weights = shard_weights
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.device_mesh = None  # the (dp, sp) DeviceMesh, built in setup_distributed
        self._sp_group: dist.ProcessGroup | None = None

    @override
    def setup_distributed(self) -> None:
        super().setup_distributed()
        world = self.world_size
        if world % self.sp_size:
            raise ValueError(f"MRSPStrategy: sp_size={self.sp_size} does not divide the {world} processes "
                             f"(devices x num_nodes)")
        from torch.distributed.device_mesh import init_device_mesh

        # rows: data-parallel replicas; columns: the consecutive ranks of one sequence-parallel group
        self.device_mesh = init_device_mesh(self.root_device.type, (world // self.sp_size, self.sp_size),
                                            mesh_dim_names=("dp", "sp"))
        self._sp_group = self.device_mesh.get_group("sp")

    @property
    def sp_group(self) -> dist.ProcessGroup | None:
        """This rank's sequence-parallel group (``None`` when ``sp_size`` is 1)."""
        return self._sp_group if self.sp_size > 1 else None

    @property
    def sp_rank(self) -> int:
        return self.global_rank % self.sp_size

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    @property
    def dp_rank(self) -> int:
        return self.global_rank // self.sp_size

    @property
    @override
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """Shard data over the data-parallel groups only: a group's ranks see the same samples."""
        return {"num_replicas": self.dp_size, "rank": self.dp_rank}

    # ------------------------------------------------------------------ sharded weights (FSDP2)
    def _sharding(self) -> bool:
        """Weights are sharded in this run (only ``fit`` shards; validate/test/predict replicate)."""
        trainer = self.lightning_module.trainer if self.lightning_module is not None else None
        return self.shard_weights and trainer is not None and trainer.state.fn == TrainerFn.FITTING

    @override
    def model_to_device(self) -> None:
        if not self._sharding():
            return super().model_to_device()
        # fully_shard moves each rank's shard to the device (the full model never has to fit
        # there); the module's own device property is updated here
        _update_properties(self.model, device=self.root_device)

    @override
    def configure_ddp(self) -> None:
        if not self._sharding():
            return super().configure_ddp()
        self.model = shard_model(self.model, self.root_device, self.world_size)
        self._replicated = [p for p in self.model.parameters() if not is_dtensor(p) and p.requires_grad]

    @override
    def post_backward(self, closure_loss: torch.Tensor) -> None:
        """Average the gradients of the replicated (vision-tower) parameters over the world, as DDP would."""
        super().post_backward(closure_loss)
        grads = [p.grad for p in getattr(self, "_replicated", ()) if p.grad is not None]
        for bucket in gradient_buckets(grads, self.bucket_bytes):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            for grad, part in zip(bucket, flat.split([g.numel() for g in bucket])):
                grad.copy_(part.view_as(grad))

    @override
    def lightning_module_state_dict(self) -> dict[str, Any]:
        """Full tensors when the weights are sharded (a collective: every rank gathers them)."""
        if not is_sharded(self.lightning_module):
            return super().lightning_module_state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.lightning_module,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    @override
    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        if not is_sharded(self.lightning_module):  # checkpoints are restored before sharding
            return super().load_model_state_dict(checkpoint, strict)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.lightning_module, checkpoint["state_dict"],
                             options=StateDictOptions(full_state_dict=True, strict=strict))

    @override
    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The full optimizer state when sharded (a collective), so checkpoints do not depend on the world size."""
        if not is_sharded(self.lightning_module):
            return super().optimizer_state(optimizer)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer wraps it
        return get_optimizer_state_dict(self.lightning_module, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    @override
    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        if not is_sharded(self.lightning_module):
            return super().load_optimizer_state_dict(checkpoint)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"]):
            set_optimizer_state_dict(self.lightning_module, getattr(optimizer, "_optimizer", optimizer), state,
                                     options=StateDictOptions(full_state_dict=True))


def shard_model(root: Module, device: torch.device, world_size: int) -> Module:
    """Shard ``root``'s language-model parameters over all ranks with FSDP2, one unit per block.

    Units, inner first: every decoder layer of each
    :class:`~lightning_longrl.models.video_lm.VideoLanguageModel` inside ``root`` (policy and
    reference), then the parts the stages call directly: the token embedding and output head (one
    unit when they are tied) and the decoder. A unit gathers its weights only while its own
    forward (or backward) runs, so every rank must run every unit equally often; the decoder is
    (every scoring pass and every decode step runs on every rank). The vision tower is not
    sharded: how often it runs depends on the data (parallel encoding splits by video, the
    embedding cache skips videos it holds), and it is small next to the decoder (0.7 B of a 7 B
    Qwen2.5-VL). It stays replicated; :class:`MRSPStrategy` averages its gradients.

    ``root`` itself becomes the FSDP root and is initialised at once: the stages never call
    ``root.forward``, they call the units, and FSDP2 would otherwise make whichever unit runs first
    the root.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from lightning_longrl.models.video_lm import VideoLanguageModel

    mesh = init_device_mesh(device.type, (world_size,))
    models = [m for m in root.modules() if isinstance(m, VideoLanguageModel)]
    vision = {p for vlm in models for p in vlm.vision_tower.parameters()}
    for vlm in models:
        for unit in _shard_units(vlm):
            fully_shard(unit, mesh=mesh)
        vlm.vision_tower.to(device)
    fully_shard(root, mesh=mesh, ignored_params=vision)  # whatever no unit holds, vision tower aside
    state = root._get_fsdp_state()
    if not hasattr(state, "_lazy_init"):  # a private FSDP2 method (torch 2.13); see the docstring
        raise RuntimeError(f"shard_weights needs FSDP2's FSDPState._lazy_init, missing in torch {torch.__version__}")
    state._lazy_init()
    return root


def _shard_units(vlm: Any) -> list[Module | list[Module]]:
    blocks = set(getattr(vlm.hf, "_no_split_modules", None) or ())
    units: list[Module | list[Module]] = [m for m in vlm.language_model.modules() if type(m).__name__ in blocks]
    embed, head = vlm.language_model.get_input_embeddings(), vlm.hf.lm_head
    tied = embed.weight is head.weight
    return units + [[embed, head] if tied else embed] + ([] if tied else [head]) + [vlm.language_model]


def gradient_buckets(grads: list[torch.Tensor], bucket_bytes: int) -> list[list[torch.Tensor]]:
    """``grads`` in order, in buckets of one dtype and device of at most ``bucket_bytes`` (a tensor
    larger than that is a bucket of its own): one all-reduce per bucket instead of per tensor."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        nbytes = grad.numel() * grad.element_size()
        last = buckets[-1][-1] if buckets else None
        if last is None or size + nbytes > bucket_bytes or (last.dtype, last.device) != (grad.dtype, grad.device):
            buckets.append([])
            size = 0
        buckets[-1].append(grad)
        size += nbytes
    return buckets


def is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)
