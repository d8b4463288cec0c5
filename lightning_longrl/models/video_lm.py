"""One small interface over Hugging Face Qwen-VL models that the training stages use.

The stages never call the Hugging Face forward with pixels. They go through four steps that can
each be cached, sharded or replaced:

1. :meth:`VideoLanguageModel.encode_video` - frames (and images, which the vision tower sees as
   videos of one temporal patch) -> visual embeddings (the expensive part for long videos; its
   output is what the embedding cache stores and what vLLM is fed);
2. :meth:`VideoLanguageModel.embed` - token ids + cached visual embeddings -> language-model
   inputs with M-RoPE position ids computed for the whole sequence;
3. :meth:`VideoLanguageModel.token_logprobs` - per-token log-probabilities of target tokens,
   evaluating the vocabulary projection only where targets exist;
4. :meth:`VideoLanguageModel.generate` - sampling with a KV cache from the same inputs.

Shapes use B prompts, L tokens, N vision tokens, H hidden size, V visual items (videos and images).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from lightning_longrl.data.prompts import END_OF_TURN
from lightning_longrl.distributed import reduce_scalar, world_size
from lightning_longrl.models.attention import use_fast_attention
from lightning_longrl.models.mrope import mrope_position_ids

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
Dtype = Literal["float32", "bfloat16", "float16"]
AttnImplementation = Literal["auto", "sdpa", "eager", "flash_attention_2"]


class VideoEmbeddings(NamedTuple):
    """Output of the vision tower for V visual items (videos, and images: one temporal patch each),
    in prompt order; V may be 0 (text-only questions)."""

    embeds: Tensor  # [N, H] merged vision tokens of all items, concatenated in prompt order
    grid_thw: Tensor  # [V, 3] (temporal, height, width) patch grid of each item
    deepstack: tuple[Tensor, ...] = ()  # Qwen3-VL: one [N, H] tensor per deepstack layer
    seconds_per_patch: Tensor | None = None  # [V] seconds per temporal patch (Qwen2.5-VL M-RoPE); None: unscaled

    def split(self, merge: int, counts: list[int] | None = None) -> list[VideoEmbeddings]:
        """One :class:`VideoEmbeddings` per item, or per question of ``counts[i]`` items each
        (``merge`` is the spatial merge size)."""
        counts = [1] * len(self.grid_thw) if counts is None else list(counts)
        if sum(counts) != len(self.grid_thw):
            raise ValueError(f"counts {counts} do not add up to the {len(self.grid_thw)} visual items")
        sizes = [int(g.prod(-1).sum()) // merge**2 for g in self.grid_thw.split(counts)]
        parts, grids = self.embeds.split(sizes), self.grid_thw.split(counts)
        deep = [d.split(sizes) for d in self.deepstack]
        seconds = self.seconds_per_patch.split(counts) if self.seconds_per_patch is not None else [None] * len(counts)
        return [VideoEmbeddings(parts[i], grids[i], tuple(d[i] for d in deep), seconds[i]) for i in range(len(counts))]

    @property
    def num_items(self) -> int:
        return int(self.grid_thw.shape[0])

    def to(self, device: torch.device | str) -> VideoEmbeddings:
        """The same embeddings on ``device`` (``self`` when already there)."""
        if self.embeds.device == torch.device(device):
            return self
        seconds = self.seconds_per_patch.to(device) if self.seconds_per_patch is not None else None
        return VideoEmbeddings(self.embeds.to(device), self.grid_thw.to(device), tuple(d.to(device) for d in self.deepstack),
                               seconds)

    def detach(self) -> VideoEmbeddings:
        return self._replace(embeds=self.embeds.detach(), deepstack=tuple(d.detach() for d in self.deepstack))

    def permute_frames(self, order: Tensor) -> VideoEmbeddings:
        """One video's embeddings with its temporal patches in ``order`` (``[t]``, a permutation):
        what the vision tower gives for the frames shuffled that way, without running it (each
        temporal patch is encoded on its own; ``tests/test_temporal.py`` checks it per architecture).
        """
        if self.grid_thw.shape[0] != 1:
            raise ValueError(f"permute_frames takes one video's embeddings, got {self.grid_thw.shape[0]}")
        t = int(self.grid_thw[0, 0])
        if sorted(order.tolist()) != list(range(t)):
            raise ValueError(f"order must be a permutation of the video's {t} temporal patches, got {order.tolist()}")

        def reorder(x: Tensor) -> Tensor:  # [N, H] -> [t, N / t, H] -> reordered -> [N, H]
            return x.view(t, -1, x.shape[-1])[order.to(x.device)].reshape(x.shape)

        return self._replace(embeds=reorder(self.embeds), deepstack=tuple(reorder(d) for d in self.deepstack))

    def state_dict(self) -> dict[str, Any]:
        """CPU tensors in plain containers (loadable with ``torch.load(weights_only=True)``)."""
        seconds = self.seconds_per_patch.cpu() if self.seconds_per_patch is not None else None
        return {"embeds": self.embeds.cpu(), "grid_thw": self.grid_thw.cpu(), "deepstack": [d.cpu() for d in self.deepstack],
                "seconds_per_patch": seconds}

    @staticmethod
    def from_state_dict(state: dict[str, Any]) -> VideoEmbeddings:
        return VideoEmbeddings(state["embeds"], state["grid_thw"], tuple(state["deepstack"]), state.get("seconds_per_patch"))

    @staticmethod
    def cat(items: list[VideoEmbeddings]) -> VideoEmbeddings:
        """Concatenate per-question embeddings back into one batch (every part has the same number
        of deepstack levels; seconds are kept when every part has them)."""
        if len({len(v.deepstack) for v in items}) > 1:
            raise ValueError("cannot concatenate embeddings with different numbers of deepstack levels")
        seconds = [v.seconds_per_patch for v in items]
        return VideoEmbeddings(
            torch.cat([v.embeds for v in items]),
            torch.cat([v.grid_thw for v in items]),
            tuple(torch.cat(layer) for layer in zip(*(v.deepstack for v in items))),
            torch.cat(seconds) if items and all(t is not None for t in seconds) else None,
        )


class LMInputs(NamedTuple):
    """What the language model consumes (prompt and any response tokens already placed)."""

    inputs_embeds: Tensor  # [B, L, H]
    attention_mask: Tensor  # [B, L] 1 for real tokens, 0 for padding
    position_ids: Tensor  # [3, B, L] M-RoPE (temporal, height, width) positions
    visual_pos_masks: Tensor | None = None  # [B, L] vision token positions (Qwen3-VL deepstack)
    deepstack: tuple[Tensor, ...] = ()  # Qwen3-VL: [N, H] per deepstack layer


class TokenScores(NamedTuple):
    """Per-token scores of target tokens."""

    logprobs: Tensor  # [B, L] log-prob of each target token (0 elsewhere)
    entropy: Tensor | None  # [B, L] entropy of the distribution that predicted it (0 elsewhere), if asked


class Generation(NamedTuple):
    """Sampled continuations of a batch of prompts."""

    tokens: Tensor  # [B, T] generated ids, padded after the end-of-sequence token
    logprobs: Tensor  # [B, T] log-prob of each sampled token under the temperature-scaled policy
    mask: Tensor  # [B, T] True for generated tokens up to and including end-of-sequence


def check_checkpoint_folder(path: str | Path) -> Path:
    """``path`` as a Path if it holds a Hugging Face ``config.json``.

    Raises:
        FileNotFoundError: with a hint on how to build a tiny checkpoint.
    """
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no Hugging Face checkpoint at {path} (missing config.json). Give a local folder, or build "
            f"a tiny one with `lightning-longrl tiny-model --out {path}`"
        )
    return path


def resolve_attn_implementation(requested: AttnImplementation) -> str:
    """``"auto"`` picks flash-attn when installed and CUDA is present, otherwise SDPA."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


class VideoLanguageModel(nn.Module):
    """A Qwen2-VL / Qwen2.5-VL / Qwen3-VL model and its processor behind one interface.

    Args:
        hf_model: a Hugging Face ``*ForConditionalGeneration`` Qwen-VL model.
        processor: its processor (tokenizer, video processor, chat template).
    """

    def __init__(self, hf_model: nn.Module, processor) -> None:
        super().__init__()
        model_type = hf_model.config.model_type
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model type {model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")
        self.hf = hf_model
        self.processor = processor
        self.model_type = model_type

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: Dtype = "float32",
        attn_implementation: AttnImplementation = "auto",
        processor=None,
    ) -> VideoLanguageModel:
        """Load model and processor from a local Hugging Face folder (no hub access).

        Args:
            path: checkpoint folder.
            dtype: weight dtype.
            attn_implementation: attention kernel; ``auto`` picks flash-attn on GPU when installed.
            processor: an already loaded processor of the same folder (loaded when ``None``).

        Raises:
            FileNotFoundError: ``path`` is not a folder with a ``config.json``.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = check_checkpoint_folder(path)
        if processor is None:
            processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        hf_model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation=resolve_attn_implementation(attn_implementation),
            local_files_only=True,
        )
        use_fast_attention(hf_model)
        return cls(hf_model, processor)

    @classmethod
    def from_config(
        cls,
        config,
        processor,
        dtype: Dtype = "float32",
        attn_implementation: AttnImplementation = "auto",
        device: str | torch.device = "cpu",
    ) -> VideoLanguageModel:
        """A randomly initialised model of ``config`` (a Hugging Face Qwen-VL config), built on
        ``device``: real model sizes for speed and memory measurements without any weights file.

        Args:
            config: e.g. a ``Qwen2_5_VLConfig`` with a real model's sizes; its special token ids
                must be those of ``processor``'s tokenizer.
            processor: the processor the model is used with.
        """
        from transformers import AutoModelForImageTextToText

        with torch.device(device):
            hf_model = AutoModelForImageTextToText.from_config(
                config, dtype=getattr(torch, dtype), attn_implementation=resolve_attn_implementation(attn_implementation))
        use_fast_attention(hf_model)
        return cls(hf_model, processor).eval()

    # ----------------------------------------------------------------------------------- facts
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def text_config(self):
        return self.hf.config.text_config

    @property
    def vision_tower(self) -> nn.Module:
        return self.hf.model.visual

    @property
    def language_model(self) -> nn.Module:
        return self.hf.model.language_model

    @property
    def spatial_merge_size(self) -> int:
        return self.hf.config.vision_config.spatial_merge_size

    @property
    def frame_size_multiple(self) -> int:
        """Frame sides must be multiples of this (patch size x spatial merge)."""
        return self.hf.config.vision_config.patch_size * self.spatial_merge_size

    @property
    def eos_token_id(self) -> int:
        """The end-of-turn token that ends a response (the same one SFT targets end with)."""
        return self.tokenizer.convert_tokens_to_ids(END_OF_TURN)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def banned_token_ids(self) -> list[int]:
        """Vision placeholder tokens a response must never contain (a sampled ``<|video_pad|>``
        would later be taken for a video position); generation and scoring both exclude them."""
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return sorted({int(i) for i in (getattr(self.hf.config, n, None) for n in names) if i is not None})

    @property
    def vision_token_ids(self) -> tuple[int, int]:
        """``<|image_pad|>`` and ``<|video_pad|>``: the tokens visual embeddings replace."""
        return int(self.hf.config.image_token_id), int(self.hf.config.video_token_id)

    # -------------------------------------------------------------------------------- pipeline
    def encode_video(self, pixel_values: Tensor, grid_thw: Tensor, seconds_per_patch: Tensor | None = None) -> VideoEmbeddings:
        """Run the vision tower and merger on visual items (an image is a video of one temporal
        patch: the Qwen processors repeat it over the temporal patch, so one call serves both).

        Args:
            pixel_values: ``[P, C*T*p*p]`` flattened patches from the processor (images' and videos').
            grid_thw: ``[V, 3]`` patch grid of each item; with none, nothing runs and the
                embeddings are empty.
            seconds_per_patch: ``[V]`` kept with the embeddings for M-RoPE timing (Qwen2.5-VL).
        """
        if grid_thw.shape[0] == 0:
            empty = self.no_embeddings(grid_thw.device, seconds_per_patch)
            trainable = [p for p in self.vision_tower.parameters() if p.requires_grad]
            if torch.is_grad_enabled() and trainable:
                # a trainable tower gets (zero) gradients from a text-only batch too, so data-parallel
                # ranks reduce the same gradients whatever media their batches hold
                touch = sum(p.reshape(-1)[:1].sum() for p in trainable) * 0.0
                empty = empty._replace(embeds=empty.embeds + touch.to(empty.embeds.dtype),
                                       deepstack=tuple(d + touch.to(d.dtype) for d in empty.deepstack))
            return empty
        out = self.hf.model.get_video_features(pixel_values, grid_thw, return_dict=True)
        embeds = torch.cat(out.pooler_output, dim=0)
        deep = tuple(torch.cat(f, dim=0) for f in getattr(out, "deepstack_features", None) or ())
        return VideoEmbeddings(embeds, grid_thw, deep, seconds_per_patch)

    def no_embeddings(self, device: torch.device | str = "cpu", seconds_per_patch: Tensor | None = None) -> VideoEmbeddings:
        """The embeddings of no visual item (a text-only question), shaped like real ones."""
        dtype = next(self.vision_tower.parameters()).dtype
        width = self.text_config.hidden_size
        levels = len(getattr(self.hf.config.vision_config, "deepstack_visual_indexes", None) or ())
        empty = torch.zeros((0, width), dtype=dtype, device=device)
        seconds = seconds_per_patch if seconds_per_patch is not None else torch.zeros(0, device=device)
        return VideoEmbeddings(empty, torch.zeros((0, 3), dtype=torch.long, device=device), (empty,) * levels, seconds)

    def position_ids(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        grid_thw: Tensor,
        second_per_grid_ts: Tensor | None = None,
    ) -> Tensor:
        """M-RoPE position ids ``[3, B, L]`` for whole sequences (see :mod:`lightning_longrl.models.mrope`).

        Args:
            input_ids: ``[B, L]``.
            attention_mask: ``[B, L]``.
            grid_thw: ``[V, 3]`` of the visual items in order of appearance.
            second_per_grid_ts: ``[V]`` seconds per temporal patch; only Qwen2.5-VL uses it.
        """
        scale = None
        if self.model_type == "qwen2_5_vl":
            if second_per_grid_ts is None:
                if bool((grid_thw[:, 0] > 1).any()):
                    raise ValueError("Qwen2.5-VL's video positions need each video's seconds per temporal patch "
                                     "(give encode_video its seconds_per_patch)")
            else:
                scale = second_per_grid_ts.double() * self.hf.config.vision_config.tokens_per_second
        return mrope_position_ids(
            input_ids, attention_mask, self.vision_token_ids, grid_thw, self.spatial_merge_size,
            temporal_scale=scale, frame_blocks=self.model_type == "qwen3_vl",
        )

    def embed(self, input_ids: Tensor, attention_mask: Tensor, video: VideoEmbeddings) -> LMInputs:
        """Token embeddings with the visual embeddings placed at the ``<|image_pad|>`` /
        ``<|video_pad|>`` positions, in order of appearance.

        Args:
            input_ids: ``[B, L]`` with as many vision tokens as ``video.embeds`` has rows.
            attention_mask: ``[B, L]``.
            video: embeddings of the batch's visual items, in prompt order (with their seconds per
                temporal patch for Qwen2.5-VL's M-RoPE timing).
        """
        embeds = self.language_model.get_input_embeddings()(input_ids)
        vision_mask = torch.isin(input_ids, torch.tensor(self.vision_token_ids, device=input_ids.device))
        if int(vision_mask.sum()) != video.embeds.shape[0]:
            raise ValueError(
                f"prompt has {int(vision_mask.sum())} vision tokens but the visual embeddings have {video.embeds.shape[0]} rows"
            )
        embeds = embeds.masked_scatter(vision_mask.unsqueeze(-1), video.embeds.to(embeds.dtype))
        positions = self.position_ids(input_ids, attention_mask, video.grid_thw, video.seconds_per_patch)
        if video.deepstack:
            return LMInputs(embeds, attention_mask, positions, vision_mask, video.deepstack)
        return LMInputs(embeds, attention_mask, positions)

    def hidden_states(self, inputs: LMInputs, past_key_values=None, use_cache: bool = False):
        """Final-layer hidden states ``[B, L, H]`` (and the KV cache when ``use_cache``)."""
        extra = {}
        if inputs.deepstack:
            extra = {"visual_pos_masks": inputs.visual_pos_masks, "deepstack_visual_embeds": list(inputs.deepstack)}
        out = self.language_model(
            inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids, past_key_values=past_key_values, use_cache=use_cache, **extra,
        )
        return (out.last_hidden_state, out.past_key_values) if use_cache else out.last_hidden_state

    def token_logprobs(self, inputs: LMInputs, input_ids: Tensor, target_mask: Tensor) -> Tensor:
        """Log-probability of each target token given everything before it.

        The vocabulary projection runs only on the positions that predict a target, which for
        long videos is a small fraction of the sequence.

        Args:
            inputs: language-model inputs for ``input_ids``.
            input_ids: ``[B, L]`` token ids (targets are read from here).
            target_mask: ``[B, L]`` bool, True at the tokens whose log-prob is wanted (position 0
                cannot be a target).

        Returns:
            ``[B, L]`` float32 log-probs at target positions, 0 elsewhere.
        """
        hidden = self.hidden_states(inputs)
        return self.logprobs_from_hidden(hidden, input_ids, target_mask)

    def logprobs_from_hidden(self, hidden: Tensor, input_ids: Tensor, target_mask: Tensor, temperature: float = 1.0) -> Tensor:
        """As :meth:`token_logprobs`, from precomputed hidden states ``[B, L, H]`` (logits divided by
        ``temperature``, the distribution that sampling with that temperature draws from)."""
        return self.score_targets(hidden, input_ids, target_mask, temperature).logprobs

    def score_targets(
        self,
        hidden: Tensor,
        input_ids: Tensor,
        target_mask: Tensor,
        temperature: float = 1.0,
        entropy: bool = False,
        exclude_vision_tokens: bool = False,
    ) -> TokenScores:
        """Log-probs (and optionally the entropy of the predicting distribution) at target tokens.

        Args:
            hidden: ``[B, L, H]`` final hidden states.
            input_ids: ``[B, L]`` token ids (targets are read from here).
            target_mask: ``[B, L]`` True at target tokens (position 0 cannot be one).
            temperature: logits are divided by it.
            entropy: also return the entropy of each target's predicting distribution.
            exclude_vision_tokens: renormalise without :attr:`banned_token_ids`, as
                :meth:`generate` samples (scoring rollouts needs this; SFT and evaluation do not).

        Returns:
            float32 ``[B, L]`` tensors, 0 outside targets.
        """
        target_mask = target_mask.bool().clone()
        target_mask[:, 0] = False
        predictors = hidden[:, :-1][target_mask[:, 1:]]  # [T, H]
        logprobs, ent_values = self.score_predictors(predictors, input_ids[:, 1:][target_mask[:, 1:]], temperature,
                                                     entropy, exclude_vision_tokens)
        out = torch.zeros(input_ids.shape, dtype=torch.float32, device=hidden.device)
        out[target_mask] = logprobs
        ent = None
        if entropy:
            ent = torch.zeros_like(out)
            ent[target_mask] = ent_values
        return TokenScores(out, ent)

    def score_predictors(self, predictors: Tensor, targets: Tensor, temperature: float = 1.0, entropy: bool = False,
                         exclude_vision_tokens: bool = False) -> tuple[Tensor, Tensor | None]:
        """Log-prob ``[T]`` of each target token given the hidden state ``[T, H]`` that predicts it
        (and, with ``entropy``, the entropy ``[T]`` of that distribution, without gradient)."""
        logits = self.hf.lm_head(predictors).float()
        if exclude_vision_tokens:
            logits = self._ban(logits)
        if temperature != 1.0:
            logits = logits / temperature
        log_norm = torch.logsumexp(logits, dim=-1)
        chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ent = None
        if entropy:
            with torch.no_grad():
                probs = torch.softmax(logits, dim=-1)
                ent = log_norm - (probs * logits.masked_fill(probs == 0, 0.0)).sum(-1)
        return chosen - log_norm, ent

    def score_responses(
        self,
        prompts: LMInputs,
        prompt_of_row: Tensor,
        responses: Tensor,
        response_mask: Tensor,
        temperature: float = 1.0,
        entropy: bool = False,
        exclude_vision_tokens: bool = False,
    ) -> TokenScores:
        """Log-probs of several responses per prompt, prefilling each prompt (video) only once.

        The prompts run through the language model once with a KV cache; the cache is then shared
        by all responses of that prompt, so G responses to a long-video question cost one video
        prefill instead of G. Gradients flow through the shared prefill as well.

        Args:
            prompts: Q left-padded prompts (every row ends with a real token).
            prompt_of_row: ``[n]`` index of each response's prompt.
            responses: ``[n, T]`` response ids, right-padded.
            response_mask: ``[n, T]`` True at real response tokens.
            temperature, entropy, exclude_vision_tokens: as in :meth:`score_targets`.

        Returns:
            ``[n, T]`` scores aligned with ``responses`` (0 where the mask is False).
        """
        checkpointing = self.training and self.hf.is_gradient_checkpointing
        if checkpointing and torch.is_grad_enabled():
            raise ValueError("score_responses() cannot backpropagate through a shared prefill with gradient "
                             "checkpointing (checkpointed layers drop the KV cache); score whole sequences instead")
        if not bool(prompts.attention_mask[:, -1].all()):
            raise ValueError("score_responses() needs left-padded prompts (every row must end with a real token)")
        if checkpointing:  # no grad: eval mode keeps the KV cache of checkpointed layers
            self.eval()
            try:
                return self.score_responses(prompts, prompt_of_row, responses, response_mask, temperature, entropy,
                                            exclude_vision_tokens)
            finally:
                self.train()
        hidden, cache = self.hidden_states(prompts, use_cache=True)
        cache.batch_select_indices(prompt_of_row)
        rows, width = responses.shape
        next_pos = (prompts.position_ids.amax(dim=(0, 2)) + 1)[prompt_of_row]  # [n]
        steps = torch.arange(max(width - 1, 0), device=responses.device)
        positions = (next_pos.unsqueeze(1) + steps).unsqueeze(0).expand(3, rows, -1)
        mask = torch.cat([prompts.attention_mask[prompt_of_row], response_mask[:, :-1].to(prompts.attention_mask.dtype)], 1)
        embeds = self.language_model.get_input_embeddings()(responses[:, :-1])
        continued = self.hidden_states(LMInputs(embeds, mask, positions), past_key_values=cache, use_cache=True)[0]
        # predictor of response token t: the prompt's last state for t = 0, else the state at token t - 1
        predictors = torch.cat([hidden[prompt_of_row, -1:], continued, torch.zeros_like(continued[:, :1])], 1)
        ids = torch.cat([torch.zeros_like(responses[:, :1]), responses], 1)
        targets = torch.cat([torch.zeros_like(response_mask[:, :1]), response_mask], 1)
        scores = self.score_targets(predictors, ids, targets, temperature, entropy, exclude_vision_tokens)
        return TokenScores(scores.logprobs[:, 1:], None if scores.entropy is None else scores.entropy[:, 1:])

    def _ban(self, logits: Tensor) -> Tensor:
        banned = self.banned_token_ids
        return logits.index_fill(-1, torch.tensor(banned, device=logits.device), float("-inf")) if banned else logits

    @torch.no_grad()
    def generate(
        self,
        inputs: LMInputs,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        num_samples: int = 1,
    ) -> Generation:
        """Sample continuations of left-padded prompts with a KV cache.

        With ``num_samples > 1`` each prompt is prefilled once and its KV cache is repeated, so G
        responses to a long-video prompt cost one prefill, not G.

        Args:
            inputs: prompts, left-padded (the last position of every row is a real token).
            max_new_tokens: length limit of each continuation (vision placeholder tokens are never
                sampled; log-probs are renormalised without them).
            temperature, top_p, top_k: sampling controls (``top_k=0`` disables top-k; a
                temperature of 0 means greedy).
            greedy: take the arg-max token instead of sampling.
            generator: random generator for reproducible sampling.
            num_samples: continuations per prompt; rows of the result are prompt-major.
        """
        if max_new_tokens < 1 or num_samples < 1:
            raise ValueError(f"max_new_tokens and num_samples must be >= 1, got {max_new_tokens} and {num_samples}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if temperature < 0 or top_k < 0:
            raise ValueError(f"temperature and top_k must be >= 0, got {temperature} and {top_k}")
        greedy = greedy or temperature == 0
        if not bool(inputs.attention_mask[:, -1].all()):
            raise ValueError("generate() needs left-padded prompts (every row must end with a real token)")
        # eval mode: gradient checkpointing drops the KV cache of layers in training mode
        was_training = self.training
        self.eval()
        try:
            return self._generate(inputs, max_new_tokens, temperature, top_p, top_k, greedy, generator, num_samples)
        finally:
            self.train(was_training)

    def _generate(self, inputs: LMInputs, max_new_tokens: int, temperature: float, top_p: float, top_k: int,
                  greedy: bool, generator: torch.Generator | None, num_samples: int) -> Generation:
        batch = inputs.inputs_embeds.shape[0] * num_samples
        device = inputs.inputs_embeds.device
        hidden, cache = self.hidden_states(inputs, use_cache=True)
        # text after the prompt continues from the largest position of any M-RoPE axis
        next_pos = inputs.position_ids.amax(dim=(0, 2)) + 1  # [B]
        mask = inputs.attention_mask
        hidden = hidden[:, -1:]
        if num_samples > 1:
            cache.batch_repeat_interleave(num_samples)
            hidden, next_pos, mask = (t.repeat_interleave(num_samples, dim=0) for t in (hidden, next_pos, mask))
        # with sharded weights (FSDP) every rank must run the same number of decode steps
        synced = world_size() > 1
        embed = self.language_model.get_input_embeddings()
        eos, pad = self.eos_token_id, self.pad_token_id
        tokens, logps, alive_steps = [], [], []
        alive = torch.ones(batch, dtype=torch.bool, device=device)
        last = hidden[:, -1]
        for step in range(max_new_tokens):
            logits = self._ban(self.hf.lm_head(last).float())
            scaled = logits / max(temperature, 1e-6)
            logp_all = torch.log_softmax(scaled, dim=-1)
            if greedy:
                token = logits.argmax(-1)
            else:
                token = torch.multinomial(_filter_logits(scaled, top_p, top_k).softmax(-1), 1, generator=generator).squeeze(-1)
            token = torch.where(alive, token, torch.full_like(token, pad))
            tokens.append(token)
            logps.append(torch.where(alive, logp_all.gather(-1, token.unsqueeze(-1)).squeeze(-1), torch.zeros_like(logits[:, 0])))
            alive_steps.append(alive.clone())
            alive = alive & (token != eos)
            still = bool(alive.any()) if not synced else reduce_scalar(float(alive.any()), "max") > 0
            if not still or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = (next_pos + step).view(1, batch, 1).expand(3, batch, 1)
            step_inputs = LMInputs(embed(token.unsqueeze(1)), mask, pos)
            hidden, cache = self.hidden_states(step_inputs, past_key_values=cache, use_cache=True)
            last = hidden[:, -1]
        return Generation(torch.stack(tokens, 1), torch.stack(logps, 1), torch.stack(alive_steps, 1))


def _filter_logits(logits: Tensor, top_p: float, top_k: int) -> Tensor:
    """Mask logits outside the top-k / nucleus (top-p) set with -inf."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits
