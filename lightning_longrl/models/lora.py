"""LoRA adapters through PEFT: which layers get them, the base weights with adapters off (the
reference model, without a second copy), and merged weights for export and for vLLM.

PEFT replaces each adapted ``nn.Linear`` by a layer holding the original as ``base_layer`` plus
``lora_A`` / ``lora_B``; the parameter names change accordingly
(``...q_proj.weight`` -> ``...q_proj.base_layer.weight``, ``...q_proj.lora_A.default.weight``).
Everything outside this package (Hugging Face folders, vLLM) expects the original names, so
weights leave through :func:`merged_weights`, which folds ``scaling * B @ A`` into the base weight.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from torch import Tensor, nn

ADAPTER = "default"
"""PEFT's adapter name; one adapter per model."""

LANGUAGE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VISION_TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                  "mlp.linear_fc1", "mlp.linear_fc2"]
"""Attention and MLP projections of the Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision blocks (each
family has some of them)."""


@dataclass
class LoRAConfig:
    """Low-rank adapters on the language model (and optionally the vision tower); everything else frozen."""

    rank: int = 16
    """r, the adapters' inner dimension."""
    alpha: float = 32.0
    """The update is scaled by ``alpha / rank``."""
    dropout: float = 0.0
    """Dropout on the adapters' input (training only)."""
    target_modules: list[str] = field(default_factory=lambda: list(LANGUAGE_TARGETS))
    """Linear layers of the language model that get adapters (PEFT's name-suffix matching)."""
    vision: bool = False
    """Also adapt the vision tower's attention and MLP projections (needs ``freeze_vision: false``;
    the cached embeddings are then invalidated after every update)."""

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora target_modules must name at least one layer")


def apply_lora(model: nn.Module, language_model: nn.Module, vision_tower: nn.Module, config: LoRAConfig) -> None:
    """Freeze every weight of ``model`` (embeddings and output head included) and add trainable
    adapters to its ``language_model`` (and ``vision_tower``), in place."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError("LoRA (model.lora) needs PEFT: pip install 'lightning_longrl[lora]'") from err

    model.requires_grad_(False)
    peft_config = dict(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout)
    inject_adapter_in_model(LoraConfig(target_modules=list(config.target_modules), **peft_config), language_model, ADAPTER)
    if config.vision:
        inject_adapter_in_model(LoraConfig(target_modules=VISION_TARGETS, **peft_config), vision_tower, ADAPTER)


@functools.cache
def _tuner_layer() -> type | None:
    """PEFT's adapted-layer class; ``None`` without PEFT (the ``lora`` extra), when nothing can be adapted."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return None
    return BaseTunerLayer


def _adapted_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    tuner = _tuner_layer()
    if tuner is not None:
        yield from ((name, m) for name, m in module.named_modules() if isinstance(m, tuner))


@contextlib.contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """The base model inside: every adapter of ``module`` is bypassed (the GRPO reference)."""
    layers = [m for _, m in _adapted_layers(module)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def adapter_scalings(module: nn.Module) -> dict[str, float]:
    """``scaling`` of each adapted layer, by its name inside ``module`` (as :func:`merged_weights`
    needs); empty for a model without adapters."""
    return {name: float(m.scaling[ADAPTER]) for name, m in _adapted_layers(module)}


def merged_weights(named: Iterable[tuple[str, Tensor]], scalings: dict[str, float]) -> Iterator[tuple[str, Tensor]]:
    """The weights under their original names with each adapter folded in: ``W + scaling * B @ A``.

    ``named`` streams ``(name, tensor)`` pairs (a state dict's items, or gathered full weights);
    pairs of unadapted layers pass through unchanged (no copy), and an adapted layer's merged
    weight is emitted once its base weight and both adapter matrices have been seen.
    """
    pending: dict[str, dict[str, Tensor]] = {}
    for name, tensor in named:
        layer, part = _split(name, scalings)
        if layer is None:
            yield name, tensor
            continue
        if part == "base_layer.bias":
            yield f"{layer}.bias", tensor
            continue
        parts = pending.setdefault(layer, {})
        parts[part] = tensor
        if len(parts) == 3:
            del pending[layer]
            base, a, b = parts["base_layer.weight"], parts[f"lora_A.{ADAPTER}.weight"], parts[f"lora_B.{ADAPTER}.weight"]
            delta = (b.float() @ a.float()) * scalings[layer]
            yield f"{layer}.weight", (base.float() + delta.reshape(base.shape)).to(base.dtype)
    if pending:
        raise ValueError(f"adapted layers missing their base weight or an adapter matrix: {sorted(pending)[:3]}")


def _split(name: str, scalings: dict[str, float]) -> tuple[str | None, str]:
    """``("a.q_proj", "lora_A.default.weight")`` for an adapted layer's tensor; ``(None, "")`` otherwise."""
    for marker in (".base_layer.", ".lora_A.", ".lora_B."):
        head, sep, tail = name.partition(marker)
        if sep and head in scalings:
            return head, marker[1:] + tail
    return None, ""
