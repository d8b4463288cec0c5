"""How a stage describes the model it trains (a typed config that LightningCLI exposes in YAML)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from lightning_longrl.models.lora import LoRAConfig, apply_lora
from lightning_longrl.models.video_lm import AttnImplementation, Dtype, VideoLanguageModel, check_checkpoint_folder


@dataclass
class ModelConfig:
    """A Qwen-VL checkpoint in a local Hugging Face folder and how to train it."""

    path: str
    """Local folder with config.json, weights, tokenizer and processor (no hub downloads)."""
    dtype: Dtype = "float32"
    """Weight dtype on load (``bfloat16`` for real models on GPU)."""
    attn_implementation: AttnImplementation = "auto"
    """``auto`` uses flash-attn on GPU when installed, SDPA otherwise."""
    freeze_vision: bool = True
    """Keep the vision tower and merger fixed (their embeddings can then be cached)."""
    gradient_checkpointing: bool = False
    """Recompute decoder activations in backward to save memory on long videos."""
    lora: LoRAConfig | None = None
    """Train low-rank adapters (PEFT) instead of the weights; ``None``: full fine-tuning. The
    base weights stay frozen, GRPO's reference is the policy with its adapters disabled, and
    exports and vLLM get the merged weights."""

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):  # from a checkpoint's hyper-parameters
            self.lora = LoRAConfig(**self.lora)
        if self.lora is not None and self.lora.vision and self.freeze_vision:
            raise ValueError("lora.vision needs freeze_vision: false (the vision tower's adapters are trained)")
        if self.lora is not None and not self.lora.vision and not self.freeze_vision:
            raise ValueError("freeze_vision: false with lora trains the vision tower through adapters only: set "
                             "lora.vision: true (or keep freeze_vision: true)")


def load_processor(config: ModelConfig):
    """The checkpoint's Hugging Face processor (cheap; no weights are read)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(check_checkpoint_folder(config.path), local_files_only=True)


CheckpointContexts = Callable[[], tuple[AbstractContextManager, AbstractContextManager]]


def load_model(config: ModelConfig, processor=None, checkpoint_contexts: CheckpointContexts | None = None) -> VideoLanguageModel:
    """Load the model of ``config`` with its trainable parts set up.

    Args:
        config: the checkpoint and how to train it.
        processor: its processor, when already loaded.
        checkpoint_contexts: ``context_fn`` of non-reentrant activation checkpointing (the
            training stages pass :func:`lightning_longrl.parallel.ulysses.checkpoint_contexts`, so
            recomputation runs under the sequence-parallel attention of its forward).
    """
    model = VideoLanguageModel.from_pretrained(config.path, config.dtype, config.attn_implementation, processor)
    return prepare_for_training(model, config, checkpoint_contexts)


def prepare_for_training(model: VideoLanguageModel, config: ModelConfig,
                         checkpoint_contexts: CheckpointContexts | None = None) -> VideoLanguageModel:
    """Freeze the vision tower, add LoRA adapters and switch on activation checkpointing as
    ``config`` says; train mode."""
    if config.freeze_vision:
        model.vision_tower.requires_grad_(False)
    if config.lora is not None:
        apply_lora(model.hf, model.language_model, model.vision_tower, config.lora)
    if config.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if checkpoint_contexts is not None:
            kwargs["context_fn"] = checkpoint_contexts
        model.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model.train()  # from_pretrained returns eval mode; a training stage switches to eval where it needs
