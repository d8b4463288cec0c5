"""Rollout engines: sample G responses per prompt from cached video embeddings.

The GRPO stage talks to an engine only through :class:`RolloutEngine`: a request carries the
left-padded prompt ids and the videos' embeddings (never pixels), so an engine never runs the
vision tower. :class:`PolicyRolloutEngine` samples with the policy's own ``generate``;
:class:`~lightning_longrl.rl.vllm_engine.VLLMRolloutEngine` samples in vLLM and takes the policy's
weights through :meth:`RolloutEngine.load_weights` (the ``VLLMWeightSync`` callback calls it).

Engines are configured as classes: GRPO, ``eval`` and ``filter`` take an :data:`EngineFactory`, a
callable that builds the engine for the policy. In Python that is the class itself or a
``functools.partial`` with its settings; in YAML it is jsonargparse's ``class_path`` and
``init_args`` (short class names work), so an engine's settings are its own constructor's
arguments and nothing here lists the engines there are.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_longrl.importing import bound_class, plain_factory
from lightning_longrl.models.video_lm import Generation, VideoEmbeddings, VideoLanguageModel


@dataclass
class SamplingConfig:
    """How rollouts are sampled."""

    num_samples: int = 8
    """G, responses per question."""
    max_new_tokens: int = 256
    """Response length limit."""
    temperature: float = 1.0
    """Sampling temperature; log-probs of the objective use the same temperature."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    greedy: bool = False
    """Take the arg-max token instead of sampling (evaluation); ``temperature`` then only scales
    the reported log-probs."""
    batch_size: int | None = None
    """Sequences generated together (memory bound; at least one prompt's G samples); ``None``:
    all B x G at once."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples (G) must be >= 1, got {self.num_samples}")
        if self.temperature <= 0:
            raise ValueError(f"rollout temperature must be > 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"rollout batch_size must be >= 1 or None, got {self.batch_size}")


@dataclass
class RolloutRequest:
    """B prompts, each with its media's embeddings, to be answered ``num_samples`` times each."""

    input_ids: Tensor  # [B, L] left-padded prompt ids
    attention_mask: Tensor  # [B, L]
    videos: list[VideoEmbeddings]  # B entries, one per prompt: its video, its images, or no item (text-only)
    num_samples: int  # responses per prompt

    def __len__(self) -> int:
        return self.input_ids.shape[0]


WeightsProvider = Callable[[], Iterable[tuple[str, Tensor]]]
"""Returns the policy's current full weights by Hugging Face name (a collective under FSDP)."""


class RolloutEngine(abc.ABC):
    """Samples responses; rows of the result are prompt-major (prompt 0's samples first)."""

    needs_weight_sync: bool = False
    """The engine keeps its own copy of the weights, which must be refreshed after updates."""
    weights_provider: WeightsProvider | None = None
    """Set by the training stage: where an engine that (re)starts later takes the policy's current
    weights from (under FSDP a gather, so every rank must start its engine at the same time)."""

    @abc.abstractmethod
    def generate(self, request: RolloutRequest, sampling: SamplingConfig, generator: torch.Generator | None) -> Generation:
        """``[B * num_samples, T]`` tokens, their log-probs under the temperature-scaled sampling
        distribution, and the mask of generated tokens (up to and including end-of-turn)."""

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:  # noqa: B027 - optional hook
        """Replace the engine's weights by the policy's (Hugging Face parameter names, full tensors)."""

    def release(self) -> None:  # noqa: B027 - optional hook
        """Free what the engine holds between rollouts (GPU memory during the update phase)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Shut the engine down at the end of training (a later rollout may start it again)."""


class PolicyRolloutEngine(RolloutEngine):
    """Samples with :meth:`VideoLanguageModel.generate` of the policy itself (always in sync)."""

    def __init__(self, model: VideoLanguageModel) -> None:
        self.model = model

    @torch.no_grad()
    def generate(self, request: RolloutRequest, sampling: SamplingConfig, generator: torch.Generator | None) -> Generation:
        g = request.num_samples
        # prompts per chunk: each is prefilled once and its KV cache shared by its G samples
        chunk = max(1, (sampling.batch_size or len(request) * g) // g)
        parts = []
        for start in range(0, len(request), chunk):
            index = torch.arange(start, min(start + chunk, len(request)), device=request.input_ids.device)
            ids, mask = _trim_left(request.input_ids[index], request.attention_mask[index])
            video = VideoEmbeddings.cat([request.videos[i] for i in index.tolist()])
            inputs = self.model.embed(ids, mask, video)
            parts.append(self.model.generate(
                inputs, max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                top_p=sampling.top_p, top_k=sampling.top_k, greedy=sampling.greedy, generator=generator, num_samples=g,
            ))
        return cat_generations(parts, self.model.pad_token_id)


def decode_responses(model: VideoLanguageModel, generation: Generation) -> list[str]:
    """The text of each generated row (its generated tokens only, special tokens dropped)."""
    return [model.tokenizer.decode(tokens[mask].tolist(), skip_special_tokens=True)
            for tokens, mask in zip(generation.tokens, generation.mask)]


def _trim_left(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop columns that are padding in every row of a left-padded chunk."""
    start = int((mask.sum(0) == 0).long().cumprod(0).sum())
    return ids[:, start:], mask[:, start:]


def cat_generations(parts: list[Generation], pad_id: int) -> Generation:
    """Stack generations of different lengths along the batch (right-padded)."""
    if len(parts) == 1:
        return parts[0]
    length = max(p.tokens.shape[1] for p in parts)

    def pad(t: Tensor, value) -> Tensor:
        return torch.nn.functional.pad(t, (0, length - t.shape[1]), value=value)

    return Generation(
        torch.cat([pad(p.tokens, pad_id) for p in parts]),
        torch.cat([pad(p.logprobs, 0.0) for p in parts]),
        torch.cat([pad(p.mask, False) for p in parts]),
    )


EngineFactory = Callable[[VideoLanguageModel], RolloutEngine]
"""Builds the rollout engine for a policy: an engine class (``PolicyRolloutEngine``), a
``functools.partial`` of one with its settings, or any callable returning a :class:`RolloutEngine`.
YAML: ``class_path: VLLMRolloutEngine`` with its ``init_args``."""


def engine_type(factory: EngineFactory) -> type | None:
    """The engine class a factory builds when that is known without building it (a class, or a
    ``functools.partial`` of one), else ``None``."""
    bound = bound_class(factory)
    return bound[0] if bound is not None else None


def check_engine_factory(factory: object, where: str) -> EngineFactory:
    """``factory`` if it can build an engine (a class or ``functools.partial`` of one for the forms
    jsonargparse builds, so that checkpoints can store it); ``where`` names the option in the error."""
    if isinstance(factory, str):
        raise TypeError(
            f"{where}: engines are classes now, not names ({factory!r}). In Python pass the class, e.g. "
            "VLLMRolloutEngine or functools.partial(VLLMRolloutEngine, max_model_len=8192); in YAML write "
            "`class_path: VLLMRolloutEngine` (with its settings under `init_args`) or the short name alone"
        )
    built = engine_type(factory)
    if built is not None and not issubclass(built, RolloutEngine):
        raise TypeError(f"{where}: {built.__qualname__} is not a RolloutEngine subclass")
    if not callable(factory):
        raise TypeError(f"{where}: expected an engine class or factory, got {type(factory).__name__}")
    return plain_factory(factory)
