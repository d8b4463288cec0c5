"""Rollouts in vLLM, fed with the cached video and image embeddings (vLLM never sees a pixel).

Each training rank runs its own in-process vLLM engine next to the policy. A prompt enters vLLM as
its token ids, with the video placeholder collapsed to one ``<|video_pad|>`` token, plus the
video's embeddings and patch grid (and, for Qwen2.5-VL, the seconds per temporal patch that its
M-RoPE scales by); vLLM expands the placeholder back to the same positions the trainer uses.
Images go the same way: one ``<|image_pad|>`` per image, their embeddings in one entry with a
``[k, 3]`` grid. A text-only question is its token ids alone.
Qwen3-VL's prompt interleaves ``<t seconds>`` text with the frames: its whole timestamped region
is collapsed to one placeholder and vLLM gets the frames' timestamps (read back from that text)
and the embeddings with their deepstack features, then rebuilds the same tokens.

Log-probs come back under the distribution vLLM samples from (``processed_logprobs``: after the
vision-token ban and the temperature), the same one the trainer scores with
:meth:`VideoLanguageModel.score_targets`. With ``top_p < 1`` or ``top_k > 0`` the sampling
distribution is truncated and its log-probs are those of the truncated distribution.

The engine loads the checkpoint folder once, then takes the policy's weights in place
(``reload_weights``) whenever :class:`~lightning_longrl.callbacks.VLLMWeightSync` pushes them.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_longrl.distributed import reduce_scalar
from lightning_longrl.models.video_lm import Generation, VideoLanguageModel
from lightning_longrl.rl.rollout import RolloutEngine, RolloutRequest, SamplingConfig

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
_TIMESTAMP = re.compile(r"<(\d+(?:\.\d+)?) seconds>")
"""Qwen3-VL's text before each frame's vision tokens (its processor writes one per temporal patch)."""


def _vllm_takes_qwen3_vl_embeddings() -> bool:
    """This vLLM accepts Qwen3-VL video embeddings with their frames' timestamps (0.32 does; older
    versions failed on the embeddings path)."""
    try:
        from vllm.model_executor.models.qwen3_vl import Qwen3VLMultiModalDataParser
    except ImportError:
        return False
    fields = getattr(Qwen3VLMultiModalDataParser, "embedding_fields", None) or {}
    return "timestamps" in fields.get("video", ())


class VLLMRolloutEngine(RolloutEngine):
    """Samples G responses per question with vLLM from the questions' cached video embeddings.

    Configured as a class: ``GRPOModule(rollout_engine=VLLMRolloutEngine)`` or
    ``functools.partial(VLLMRolloutEngine, max_model_len=8192)`` in Python; in YAML
    ``rollout_engine: {class_path: VLLMRolloutEngine, init_args: {max_model_len: 8192}}`` (the same
    for ``engine:`` of ``eval`` and ``filter``). Every setting is optional.

    Args:
        model: the policy (its checkpoint folder, tokenizer and special tokens; vLLM holds its own
            copy of the weights).
        dtype: weights and activations in vLLM; ``None``: the policy's dtype.
        max_model_len: longest prompt plus response, in tokens (video tokens included). ``None``: the
            first batch's longest prompt plus ``max_new_tokens``, with 25% headroom; a longer prompt
            later rebuilds the engine with more room (set it to avoid the rebuild).
        max_num_batched_tokens: tokens per engine step; ``None``: ``max_model_len``, so a whole video
            prompt prefills at once.
        max_num_seqs: sequences decoded together; ``None``: vLLM's default.
        gpu_memory_utilization: GPU only: the share of GPU memory vLLM may take (weights plus KV
            cache) next to training.
        cpu_kv_cache_gib: CPU only: KV-cache size in GiB (``VLLM_CPU_KVCACHE_SPACE``).
        enable_prefix_caching: reuse the prompt's KV cache across the G samples of a question.
        sleep_level: GPU only: free memory during the update phase. 1 offloads weights to CPU and
            drops the KV cache; 2 drops both (weights come back with the next sync); 0 never sleeps.
            CPU: a logged no-op.
        enforce_eager: run the model eagerly. ``None``: eagerly on CPU (starts in seconds; compiling
            cost about 25 s at the first start for about 20% more tiny-model throughput), compiled
            with CUDA graphs on GPU.
        seed: engine seed (every request also carries its own seed drawn from the rollout generator).
        extra_args: further ``vllm.LLM(...)`` arguments.
    """

    needs_weight_sync = True

    def __init__(
        self,
        model: VideoLanguageModel,
        dtype: str | None = None,
        max_model_len: int | None = None,
        max_num_batched_tokens: int | None = None,
        max_num_seqs: int | None = None,
        gpu_memory_utilization: float = 0.35,
        cpu_kv_cache_gib: float = 1.0,
        enable_prefix_caching: bool = True,
        sleep_level: int = 1,
        enforce_eager: bool | None = None,
        seed: int = 0,
        extra_args: dict[str, Any] | None = None,
    ) -> None:
        if sleep_level not in (0, 1, 2):
            raise ValueError(f"VLLMRolloutEngine sleep_level must be 0, 1 or 2, got {sleep_level}")
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"VLLMRolloutEngine max_model_len must be >= 1 or None, got {max_model_len}")
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(f"VLLMRolloutEngine gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if model.model_type not in SUPPORTED_MODEL_TYPES:
            raise NotImplementedError(f"the vLLM rollout engine supports {SUPPORTED_MODEL_TYPES}, not "
                                      f"{model.model_type!r}; use rollout_engine: PolicyRolloutEngine")
        if model.model_type == "qwen3_vl" and not _vllm_takes_qwen3_vl_embeddings():
            raise NotImplementedError("this vLLM cannot take Qwen3-VL video embeddings with their frames' timestamps "
                                      "(vLLM 0.32 can); use rollout_engine: PolicyRolloutEngine")
        self.model = model
        self.max_model_len = max_model_len
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.gpu_memory_utilization = gpu_memory_utilization
        self.cpu_kv_cache_gib = cpu_kv_cache_gib
        self.enable_prefix_caching = enable_prefix_caching
        self.sleep_level = sleep_level
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.extra_args = dict(extra_args or {})
        self.path = str(model.hf.name_or_path)
        if not (Path(self.path) / "config.json").is_file():
            raise ValueError(f"the vLLM engine starts from the policy's checkpoint folder, but the policy was not "
                             f"loaded from one (name_or_path={self.path!r})")
        self.dtype = dtype or str(next(model.parameters()).dtype).removeprefix("torch.")
        self.llm = None
        self.built_len = 0  # max_model_len of the running vLLM (0: not built)
        self.builds = 0
        self.sleeping: set[str] = set()  # vLLM sleep tags ("weights", "kv_cache") now asleep (GPU)
        self._told_no_sleep = False
        # vision placeholders are never sampled (as in the policy's own generate); a bias of -inf
        # masks them before the temperature, so the reported log-probs renormalise without them
        self._ban = {int(i): float("-inf") for i in model.banned_token_ids}
        self._video_token = int(model.hf.config.video_token_id)

    # ---------------------------------------------------------------------------- lifecycle
    @property
    def on_gpu(self) -> bool:
        return torch.cuda.is_available()

    def _build(self, needed: int) -> None:
        """Start vLLM with room for ``needed`` tokens per sequence, then load the policy's weights."""
        if self.max_model_len is not None:
            if needed > self.max_model_len:
                raise ValueError(
                    f"a prompt plus its response needs {needed} tokens but max_model_len is "
                    f"{self.max_model_len}; raise it or sample fewer frames / smaller frames"
                )
            length = self.max_model_len
        else:
            length = int(math.ceil(needed * 1.25 / 64) * 64)
        if self.llm is not None:
            log.warning("vLLM engine: a prompt needs %d tokens, more than its max_model_len %d; rebuilding it "
                        "with %d (set max_model_len to avoid this)", needed, self.built_len, length)
            self.close()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: weights load by reference
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.cpu_kv_cache_gib:g}")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        # the engine shares the training process's cores: do not pin its threads (pinning also
        # pins the trainer's own threads, and was slower on a 2-core machine)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm import LLM

        _quiet_benign_vllm_warnings()

        args: dict[str, Any] = dict(
            model=self.path, tokenizer=self.path, dtype=self.dtype, seed=self.seed,
            distributed_executor_backend="uni",
            enforce_eager=self.enforce_eager if self.enforce_eager is not None else not self.on_gpu,
            enable_mm_embeds=True, limit_mm_per_prompt={"video": 1, "image": 0},  # 0: embeddings are not counted
            max_model_len=length, max_num_batched_tokens=self.max_num_batched_tokens or length,
            logprobs_mode="processed_logprobs", enable_prefix_caching=self.enable_prefix_caching,
        )
        if self.max_num_seqs is not None:
            args["max_num_seqs"] = self.max_num_seqs
        if self.on_gpu:
            # one independent engine per rank, on the rank's own GPU (untested here: no GPU with vLLM)
            args["device_ids"] = [torch.cuda.current_device()]
            args["gpu_memory_utilization"] = self.gpu_memory_utilization
            args["enable_sleep_mode"] = self.sleep_level > 0
        args.update(self.extra_args)
        set_num_threads = torch.set_num_threads
        try:
            self.llm = LLM(**args)
        finally:
            # vLLM's CPU worker replaces torch.set_num_threads for the whole process; data-loader
            # workers (forked processes) still need the real one
            torch.set_num_threads = set_num_threads
        self.built_len = length
        self.builds += 1
        self.sleeping = set()
        if self.weights_provider is not None:
            self.load_weights(self.weights_provider())

    def close(self) -> None:
        """Shut the engine down (a later rollout starts it again)."""
        if self.llm is None:
            return
        self.llm = None
        gc.collect()
        if self.on_gpu:
            torch.cuda.empty_cache()

    def release(self) -> None:
        """Sleep during the update phase (GPU); on CPU vLLM has no sleep mode and this only logs."""
        if self.llm is None or self.sleep_level == 0 or self.sleeping:
            return
        if not self.on_gpu:
            if not self._told_no_sleep:
                log.info("vLLM engine: no sleep mode on CPU; the engine stays resident during updates")
                self._told_no_sleep = True
            return
        self.llm.sleep(level=self.sleep_level)
        self.sleeping = {"weights", "kv_cache"}

    def _wake(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        waking = [t for t in tags if t in self.sleeping]
        if not waking:
            return
        self.llm.wake_up(waking)
        self.sleeping -= set(waking)
        if "weights" in waking and self.sleep_level == 2 and tags != ("weights",):
            # level 2 dropped the weights; without a sync since, take them from the policy again
            if self.weights_provider is None:
                raise RuntimeError("vLLM sleep_level 2 discarded the weights and no weights provider is set")
            self.load_weights(self.weights_provider())

    # ------------------------------------------------------------------------------ weights
    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        """Copy the policy's weights into vLLM in place (Hugging Face names; vLLM maps and fuses
        them) and drop every cache computed with the old ones. Before the engine is built this does
        nothing: a build loads :attr:`weights_provider`'s weights itself."""
        if self.llm is None:
            for _ in weights:  # a gathering iterator is a collective: run it on every rank
                pass
            return
        self._wake(("weights",))
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": _on(weights, self.dtype)})
        # the reload empties the worker's encoder cache; the scheduler must forget it too
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()

    # ----------------------------------------------------------------------------- rollouts
    @torch.no_grad()
    def generate(self, request: RolloutRequest, sampling: SamplingConfig, generator: torch.Generator | None) -> Generation:
        prompts = [self._prompt(request, i) for i in range(len(request))]
        longest = int(request.attention_mask.sum(-1).max())  # prompt ids carry every video token
        needed = int(reduce_scalar(longest + sampling.max_new_tokens, "max"))  # ranks build together
        if self.llm is None or needed > self.built_len:
            self._build(needed)
        self._wake()
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            n=request.num_samples, temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=sampling.top_p, top_k=sampling.top_k,
            max_tokens=sampling.max_new_tokens, logprobs=0, flat_logprobs=True, logit_bias=self._ban,
            ignore_eos=True, stop_token_ids=[self.model.eos_token_id], detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        # Reproducible sampling: vLLM draws from the global RNG, seeded here from the rollout
        # generator and restored afterwards, and every call starts from an empty prefix cache so the
        # engine schedules (and so draws) the same way for the same request. (Per-request seeds would
        # be the alternative, but vLLM's CPU backend fails to rewind a seeded generator when it
        # splits a prefill across steps.) The G samples of a question still share its prefill.
        self.llm.reset_prefix_cache()
        if self.enable_prefix_caching and request.num_samples > 1:
            # prefill each prompt once (greedy, one token, no random draws): its G samples, which
            # vLLM schedules together, then find the video's KV cache instead of each computing it
            warm = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)
            self.llm.generate(prompts, warm, use_tqdm=False)
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=_device_of(generator)))
        devices = [torch.cuda.current_device()] if self.on_gpu else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return self._to_generation(outputs, request.num_samples, request.input_ids.device)

    def _prompt(self, request: RolloutRequest, i: int) -> dict[str, Any]:
        """Row ``i`` as vLLM takes it: prompt ids with each vision-token run collapsed to one
        placeholder (vLLM expands it again from the embeddings), and the embeddings as
        ``multi_modal_data``; a text-only row is its ids alone."""
        ids = request.input_ids[i][request.attention_mask[i].bool()].tolist()
        media = request.videos[i]
        if media.num_items == 0:
            return {"prompt_token_ids": ids}
        dtype = getattr(torch, self.dtype)
        if self._video_token not in ids:
            return self._image_prompt(ids, media, dtype)
        if self.model.model_type == "qwen3_vl":
            return self._qwen3_vl_prompt(ids, media, dtype)
        data: dict[str, Any] = {"video_embeds": media.embeds.to(dtype), "video_grid_thw": media.grid_thw}
        if self.model.model_type == "qwen2_5_vl":  # Qwen2-VL's M-RoPE has no time scale
            if media.seconds_per_patch is None:
                raise ValueError("Qwen2.5-VL video embeddings need their seconds per temporal patch")
            data["second_per_grid_ts"] = media.seconds_per_patch.float().cpu()
        return {"prompt_token_ids": _collapse(ids, self._video_token), "multi_modal_data": {"video": data}}

    def _image_prompt(self, ids: list[int], media, dtype: torch.dtype) -> dict[str, Any]:
        """Images: every image's run of ``<|image_pad|>`` becomes one pad (its vision start and end
        tokens stay); all the prompt's images travel in one entry, embeddings concatenated in order
        with a ``[k, 3]`` grid (Qwen3-VL: deepstack features after them along the hidden dimension)."""
        image = int(self.model.hf.config.image_token_id)
        collapsed = _collapse(ids, image)
        if collapsed.count(image) != media.num_items or bool((media.grid_thw[:, 0] != 1).any()):
            raise ValueError(f"prompt shows {collapsed.count(image)} images but its embeddings hold "
                             f"{media.num_items} items of grids {media.grid_thw.tolist()}")
        embeds = torch.cat([media.embeds, *media.deepstack], dim=1)
        data = {"image_embeds": embeds.to(dtype), "image_grid_thw": media.grid_thw.cpu()}
        return {"prompt_token_ids": collapsed, "multi_modal_data": {"image": data}}

    def _qwen3_vl_prompt(self, ids: list[int], video, dtype: torch.dtype) -> dict[str, Any]:
        """Qwen3-VL: the prompt interleaves ``<t seconds>`` text with each temporal patch's
        ``<|vision_start|> pads <|vision_end|>``. vLLM writes that region itself from one
        ``<|video_pad|>`` and the frames' timestamps, so the region is collapsed to one pad and its
        timestamps are read back from the prompt's own text (exactly what the processor wrote);
        the region vLLM will rebuild is checked token for token against the trainer's. The
        deepstack features travel concatenated after the embeddings along the hidden dimension."""
        config, tokenizer = self.model.hf.config, self.model.tokenizer
        pad, start, end = self._video_token, int(config.vision_start_token_id), int(config.vision_end_token_id)
        frames, height, width = (int(x) for x in video.grid_thw[0])
        per_frame = height * width // self.model.spatial_merge_size**2
        runs = [j for j, t in enumerate(ids) if t == pad and (j == 0 or ids[j - 1] != pad)]
        if len(runs) != frames or any(ids[r - 1] != start or ids[r : r + per_frame] != [pad] * per_frame
                                      or ids[r + per_frame] != end for r in runs):
            raise ValueError(f"Qwen3-VL prompt: expected {frames} frames of {per_frame} video tokens between "
                             "<|vision_start|> and <|vision_end|>")
        times, first = [], None
        for f, run in enumerate(runs):
            stop = run - 1  # this frame's <|vision_start|>
            if f:
                text = ids[runs[f - 1] + per_frame + 1 : stop]
                match = _TIMESTAMP.fullmatch(tokenizer.decode(text))
            else:  # the frame-0 timestamp follows template text: the shortest suffix that is one
                for begin in range(stop - 1, max(stop - 32, 0) - 1, -1):
                    match = _TIMESTAMP.fullmatch(tokenizer.decode(ids[begin:stop]))
                    if match:
                        first = begin
                        break
            if not match:
                raise ValueError(f"Qwen3-VL prompt: no '<t seconds>' text before frame {f}")
            times.append(float(match.group(1)))
        last = runs[-1] + per_frame  # the last frame's <|vision_end|>
        rebuilt = []
        for t in times:
            rebuilt += tokenizer.encode(f"<{t:.1f} seconds>", add_special_tokens=False) + [start] + [pad] * per_frame + [end]
        if ids[first : last + 1] != rebuilt:
            raise ValueError("Qwen3-VL prompt: vLLM would not rebuild this prompt's frames and timestamps token for token")
        embeds = torch.cat([video.embeds, *video.deepstack], dim=1)
        expected = int(config.vision_config.out_hidden_size) * (1 + len(config.vision_config.deepstack_visual_indexes))
        if embeds.shape != (frames * per_frame, expected):
            raise ValueError(f"Qwen3-VL video embeddings with deepstack are {tuple(embeds.shape)}, expected "
                             f"({frames * per_frame}, {expected})")
        data = {"video_embeds": embeds.to(dtype), "video_grid_thw": video.grid_thw.cpu(), "timestamps": [times]}
        return {"prompt_token_ids": ids[:first] + [pad] + ids[last + 1 :], "multi_modal_data": {"video": data}}

    def _to_generation(self, outputs, num_samples: int, device: torch.device) -> Generation:
        rows: list[tuple[list[int], list[float]]] = []
        for out in outputs:
            samples = sorted(out.outputs, key=lambda c: c.index)
            if len(samples) != num_samples:
                raise RuntimeError(f"vLLM returned {len(samples)} samples for a prompt, expected {num_samples}")
            for c in samples:
                tokens = list(c.token_ids)
                rows.append((tokens, _sampled_logprobs(c.logprobs, tokens)))
        width = max(1, max(len(t) for t, _ in rows))
        tokens = torch.full((len(rows), width), self.model.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(len(rows), width)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, (ids, lps) in enumerate(rows):
            tokens[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            logprobs[r, : len(ids)] = torch.tensor(lps)
            mask[r, : len(ids)] = True
        return Generation(tokens.to(device), logprobs.to(device), mask.to(device))


class _BenignWarnings(logging.Filter):
    """Drops vLLM warnings that every weight sync and every data-loader worker would repeat but
    that say nothing is wrong: layers without checkpoint weights (rotary tables, a fused-norm
    wrapper) "failed to load", and set_num_threads calls vLLM's CPU worker refuses."""

    BENIGN = ("RotaryEmbedding: Failed to load weights", "MRotaryEmbedding: Failed to load weights",
              "FusedMMInputNorm: Failed to load weights", "doesn't allow to use `torch.set_num_threads`")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.BENIGN)


def _quiet_benign_vllm_warnings() -> None:
    for name in ("vllm.model_executor.model_loader.reload.layerwise", "vllm.v1.worker.cpu_worker"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _BenignWarnings) for f in logger.filters):
            logger.addFilter(_BenignWarnings())


def _collapse(ids: list[int], token: int) -> list[int]:
    """``ids`` with every run of ``token`` shortened to one."""
    return [t for j, t in enumerate(ids) if not (t == token and j and ids[j - 1] == token)]


def _sampled_logprobs(flat, tokens: list[int]) -> list[float]:
    """The log-prob of each sampled token from vLLM's flat per-position log-prob lists."""
    out = []
    for j, token in enumerate(tokens):
        entries = range(flat.start_indices[j], flat.end_indices[j])
        out.append(next(flat.logprobs[k] for k in entries if flat.token_ids[k] == token))
    return out


def _device_of(generator: torch.Generator | None) -> torch.device | str:
    return generator.device if generator is not None else "cpu"


def _on(weights: Iterable[tuple[str, Tensor]], dtype: str) -> Iterator[tuple[str, Tensor]]:
    target = getattr(torch, dtype)
    for name, tensor in weights:
        yield name, tensor.to(target)
