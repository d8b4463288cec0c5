"""The policy's full weights, by Hugging Face parameter name, for an engine that keeps its own copy.

Under FSDP a rank holds only a shard of each parameter; the full tensors are gathered with
``torch.distributed.checkpoint``'s full state dict (a collective: every rank must call it). Without
sharding (one process, DDP) the parameters are passed as they are, without a copy.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

_WRAPPER_NAMES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def is_sharded(root: nn.Module) -> bool:
    """Parameters of ``root`` are split across ranks (FSDP1 flat parameters or FSDP2 DTensors)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in root.modules()):
        return True
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return False
    return any(isinstance(p, DTensor) for p in root.parameters())


def full_weights(policy: nn.Module, root: nn.Module | None = None) -> Iterator[tuple[str, Tensor]]:
    """``(name, tensor)`` for every parameter of ``policy``, names relative to ``policy``.

    Args:
        policy: the Hugging Face model whose weights are wanted.
        root: the module the training strategy wrapped (FSDP, DDP), which contains ``policy``;
            ``None`` or an unsharded root: ``policy``'s own parameters are used.
    """
    if root is None or not is_sharded(root):
        for name, param in policy.named_parameters():
            yield name, param.detach()
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    prefix = _path_inside(root, policy)
    wanted = {_clean(n) for n, _ in policy.named_parameters()}
    state = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True))
    for key, value in state.items():
        name = _clean(key)
        if name.startswith(prefix) and name[len(prefix):] in wanted:
            yield name[len(prefix):], value.detach()


def _clean(name: str) -> str:
    for wrapper in _WRAPPER_NAMES:
        name = name.replace(wrapper, "")
    return name


def _path_inside(root: nn.Module, module: nn.Module) -> str:
    """``"a.b."``: where ``module`` sits inside ``root`` (wrapper names removed)."""
    for name, candidate in root.named_modules():
        if candidate is module:
            return _clean(name + ".") if name else ""
    raise ValueError("the policy model is not inside the module the strategy wrapped")
