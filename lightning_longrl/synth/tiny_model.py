"""Tiny random Qwen-VL checkpoints, built offline, for tests and the demo.

:func:`create_tiny_checkpoint` writes a folder with the same files a real Qwen-VL checkpoint has
(config, safetensors weights, tokenizer, processor with chat template), so the code that trains
it is the ``from_pretrained`` path used for real models. The tokenizer is a small byte-level BPE
trained on synthetic-task text plus Qwen's special tokens. Sizes respect vLLM's CPU attention
(head size 32 or more) so the same folder can be served by vLLM.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from lightning_longrl.data import prompts

Architecture = Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
ARCHITECTURES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
"""Added as whole (non-special) tokens so the tiny model can emit the format in one step each."""

# Qwen's ChatML layout. Qwen2/2.5-VL wrap the video placeholder in vision start/end tokens; the
# Qwen3-VL processor inserts its own per-frame wrappers and timestamps around <|video_pad|>.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}VIDEO_PLACEHOLDER"
    "{% elif item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template(arch: Architecture) -> str:
    placeholder = "<|video_pad|>" if arch == "qwen3_vl" else "<|vision_start|><|video_pad|><|vision_end|>"
    return _CHAT_TEMPLATE.replace("VIDEO_PLACEHOLDER", placeholder)


@dataclass
class TinyModelSpec:
    """Sizes of a tiny random Qwen-VL model."""

    arch: Architecture = "qwen2_5_vl"
    hidden_size: int = 128
    """Language-model width (also the vision tower's output width)."""
    num_layers: int = 2
    num_heads: int = 4
    """Attention heads; hidden_size / num_heads must be >= 32 for vLLM's CPU attention."""
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vision_width: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    vocab_size: int = 1024
    """Target BPE vocabulary (special and reasoning tokens come on top)."""
    rope_theta: float | None = None
    """Rotary base of the language model (default: the architecture's, 1e6 or 5e6, made for long contexts)."""
    mrope_section: list[int] | None = None
    """Rotary frequency pairs given to (time, height, width); they must sum to head_dim / 2
    (default: Qwen's proportions, 1/4 time, 3/8 each for height and width)."""
    tokens_per_second: int = 2
    """Qwen2.5-VL only: temporal rotary positions per second of video (Qwen2.5-VL's own value is 2)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; choose from {ARCHITECTURES}")
        head_dim, rem = divmod(self.hidden_size, self.num_heads)
        if rem or head_dim < 32 or head_dim % 8:
            raise ValueError(
                f"hidden_size / num_heads must be a multiple of 8 and >= 32 (vLLM CPU attention); got {self.hidden_size}/{self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.mrope_section is not None and (len(self.mrope_section) != 3 or sum(self.mrope_section) != head_dim // 2
                                               or min(self.mrope_section) < 1):
            raise ValueError(f"mrope_section must be 3 positive numbers summing to head_dim / 2 = {head_dim // 2}, "
                             f"got {self.mrope_section}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def build_tokenizer(vocab_size: int = 1024, corpus: list[str] | None = None):
    """A byte-level BPE tokenizer with Qwen's special tokens, trained offline on ``corpus``.

    Returns:
        A ``transformers`` fast tokenizer with ``eos_token = <|im_end|>`` and ``pad_token = <|endoftext|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lightning_longrl.synth.dataset import tokenizer_corpus

    if corpus is None:
        corpus = [prompts.SYSTEM_PROMPT, prompts.THINK_INSTRUCTION, prompts.DIRECT_INSTRUCTION,
                  prompts.LETTER_INSTRUCTION, "Question: Options: Subtitles of the video:",
                  *"ABCDEFGH", *tokenizer_corpus()]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:], clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens(REASONING_TOKENS)
    tokenizer.padding_side = "right"
    return tokenizer


def _config(spec: TinyModelSpec, tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab = len(tokenizer)
    vocab += -vocab % 64  # room to grow, and a friendlier matrix size
    text = dict(
        vocab_size=vocab, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, max_position_embeddings=32768, rms_norm_eps=1e-6,
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    quarter = spec.head_dim // 2  # rotary pairs per head, split over (t, h, w)
    section = list(spec.mrope_section or [quarter - 2 * (quarter * 3 // 8), quarter * 3 // 8, quarter * 3 // 8])
    tokens = dict(
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    if spec.arch == "qwen2_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": spec.rope_theta or 1_000_000.0, "mrope_section": section}
        vision = dict(depth=spec.vision_depth, embed_dim=spec.vision_width, hidden_size=spec.hidden_size,
                      num_heads=spec.vision_heads, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)
    if spec.arch == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": spec.rope_theta or 1_000_000.0, "mrope_section": section}
        vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_width, out_hidden_size=spec.hidden_size,
                      intermediate_size=2 * spec.vision_width, num_heads=spec.vision_heads, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=spec.tokens_per_second, window_size=56,
                      fullatt_block_indexes=[spec.vision_depth - 1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    text.update(head_dim=spec.head_dim, rope_parameters={
        "rope_type": "default", "rope_theta": spec.rope_theta or 5_000_000.0, "mrope_section": section, "mrope_interleaved": True})
    vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_width, out_hidden_size=spec.hidden_size,
                  intermediate_size=2 * spec.vision_width, num_heads=spec.vision_heads, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256,
                  deepstack_visual_indexes=[0])
    return Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)


def _processor(arch: Architecture, tokenizer):
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    # Small pixel bounds: the data layer already resizes frames to its own per-frame budget.
    if arch == "qwen3_vl":
        image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                      image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                      size={"shortest_edge": 32 * 32, "longest_edge": 512 * 512})
        video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                      size={"shortest_edge": 32 * 32, "longest_edge": 512 * 512 * 64},
                                      do_sample_frames=False)
        cls = Qwen3VLProcessor
    else:
        image = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2,
                                      size={"shortest_edge": 28 * 28, "longest_edge": 448 * 448})
        video = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2,
                                      size={"shortest_edge": 28 * 28, "longest_edge": 448 * 448})
        cls = Qwen2_5_VLProcessor if arch == "qwen2_5_vl" else Qwen2VLProcessor
    return cls(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=chat_template(arch))


_MODEL_CLASSES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}


def create_tiny_checkpoint(out_dir: str | Path, spec: TinyModelSpec | None = None, overwrite: bool = False) -> Path:
    """Build a tiny random Qwen-VL model with tokenizer and processor and save it to ``out_dir``.

    The folder loads with ``from_pretrained`` like any Hugging Face checkpoint. A folder that
    already holds a checkpoint built from the same spec is reused unless ``overwrite`` is set.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    import transformers

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    stamp = out / "tiny_spec.json"
    # the tokenizer is trained on synthetic-task text, so a new generator version means a new tokenizer
    from lightning_longrl.synth.dataset import GENERATOR_VERSION

    built_from = {**asdict(spec), "synth_generator_version": GENERATOR_VERSION}
    if not overwrite and stamp.exists() and json.loads(stamp.read_text()) == built_from:
        return out
    tokenizer = build_tokenizer(spec.vocab_size)
    config = _config(spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = getattr(transformers, _MODEL_CLASSES[spec.arch])(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _processor(spec.arch, tokenizer).save_pretrained(out)
    stamp.write_text(json.dumps(built_from, indent=2))
    return out
