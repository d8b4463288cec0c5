"""Stage 2: GRPO on long videos, with every video encoded once per step.

One training step (one batch of B questions):

1. **encode** each video once (or take it from the :class:`VideoEmbeddingCache`);
2. **rollout**: sample G responses per question through a :class:`RolloutEngine` fed with the
   cached embeddings;
3. **reward**: score the responses, normalise rewards within each group into advantages
   (optionally dropping groups that are all right or all wrong and sampling more);
4. **old policy** and **reference** log-probs of the responses, from the same embeddings;
5. **update**: clipped-ratio policy gradient with a KL penalty, over mini-batches and epochs.

With the cache switched off every rollout and every pass re-encodes its video, as RL frameworks
without the cache do, so the saving can be measured (``benchmarks/embedding_cache.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from lightning_longrl.data.collate import VideoBatch
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.distributed import gather_objects, reduce_scalar
from lightning_longrl.models.config import ModelConfig, load_model
from lightning_longrl.models.video_lm import Generation, VideoEmbeddings, VideoLanguageModel
from lightning_longrl.parallel.encode import sp_encode_video
from lightning_longrl.parallel.sequence import score_sequence
from lightning_longrl.rl.advantages import group_advantages, informative_groups
from lightning_longrl.rl.embedding_cache import EmbeddingCacheConfig, VideoEmbeddingCache
from lightning_longrl.rl.groups import RolloutGroups, left_pad, pack_rows, to_response_layout
from lightning_longrl.rl.monitoring import PhaseTimer
from lightning_longrl.rl.objective import GRPOLossConfig, grpo_loss, rollout_importance_weights
from lightning_longrl.rl.rewards import CombinedReward, RewardSpec, default_rewards
from lightning_longrl.rl.rollout import RolloutRequest, SamplingConfig, build_engine, cat_generations, engine_class
from lightning_longrl.rl.vllm_engine import VLLMConfig
from lightning_longrl.parallel.grads import clip_grad_norm
from lightning_longrl.rl.weights import full_weights
from lightning_longrl.stages.batch_ops import decode_responses
from lightning_longrl.stages.base import VideoQAStage
from lightning_longrl.stages.optim import LRSchedule


@dataclass
class UpdateConfig:
    """How the sampled responses of one step update the policy."""

    epochs: int = 1
    """Passes over the step's responses (each pass re-shuffles them into mini-batches)."""
    mini_batch_size: int | None = None
    """Responses per optimizer step; ``None``: all B x G responses (one optimizer step per epoch)."""
    micro_batch_size: int | None = None
    """Responses per forward/backward (gradients accumulate up to the mini-batch); ``None``: the mini-batch."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm before each optimizer step (``None``: no clipping)."""
    shared_prefill: bool = True
    """Score a question's responses from one prefill of its video and prompt (a KV cache shared by
    the G responses) in the old-policy, reference and update passes. Off: one full sequence per
    response. The update falls back to full sequences under gradient checkpointing."""

    def __post_init__(self) -> None:
        for name in ("mini_batch_size", "micro_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"update {name} must be >= 1 or None, got {value}")
        if self.epochs < 1:
            raise ValueError(f"update epochs must be >= 1, got {self.epochs}")


@dataclass
class DynamicSamplingConfig:
    """Online filtering: keep only groups whose accuracy is mixed, sampling more questions until
    the batch is full (DAPO's dynamic sampling)."""

    enabled: bool = False
    max_tries: int = 4
    """Batches of questions sampled at most per update; the update then runs with what was kept."""

    def __post_init__(self) -> None:
        if self.max_tries < 1:
            raise ValueError(f"dynamic_sampling max_tries must be >= 1, got {self.max_tries}")


@dataclass
class RolloutView:
    """The latest step's questions and responses, for sample logging (see ``RolloutSampleLogger``)."""

    records: list[VideoQARecord]
    texts: list[str]  # B*G responses, prompt-major
    rewards: Tensor  # [B, G]
    pixel_values: list[Tensor]  # B x [P_i, D] the patches the model saw
    grid_thw: Tensor  # [B, 3]


class GRPOModule(VideoQAStage):
    """Group Relative Policy Optimisation on long videos (manual optimisation).

    Args:
        model: the policy checkpoint (typically the SFT stage's export) and how to train it.
        optimizer: optimizer factory.
        lr_schedule: learning-rate schedule over policy updates (one per batch of questions; with
            dynamic sampling, one per filled batch).
        sampling: G, temperature and length of rollouts.
        loss: clipping, KL estimator and coefficient, loss aggregation.
        update: epochs, mini- and micro-batch sizes, gradient clipping.
        rewards: weighted reward terms (default 0.9 accuracy + 0.1 format).
        rollout_engine: ``policy`` (the policy's own ``generate``), ``vllm`` (an in-process vLLM
            engine per rank, kept in sync by :class:`~lightning_longrl.callbacks.VLLMWeightSync`,
            added when the trainer has none) or the import path of a
            :class:`~lightning_longrl.rl.rollout.RolloutEngine` subclass.
        vllm: settings of the ``vllm`` engine.
        embedding_cache: the video-embedding cache and its off switch.
        dynamic_sampling: online filtering of groups with all-equal accuracy.
        reference: checkpoint of the frozen reference model (default: ``model.path``).
        advantage_eps: added to the group standard deviation.
        rollout_seed: seed of rollout sampling and of the update's shuffling (each rank adds its rank).
        max_new_tokens: response length limit of validation/test generation (default: ``sampling.max_new_tokens``).
    """

    def __init__(
        self,
        model: ModelConfig,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule | None = None,
        sampling: SamplingConfig | None = None,
        loss: GRPOLossConfig | None = None,
        update: UpdateConfig | None = None,
        rewards: list[RewardSpec] | None = None,
        rollout_engine: str = "policy",
        vllm: VLLMConfig | None = None,
        embedding_cache: EmbeddingCacheConfig | None = None,
        dynamic_sampling: DynamicSamplingConfig | None = None,
        reference: str | None = None,
        advantage_eps: float = 1e-6,
        rollout_seed: int = 0,
        max_new_tokens: int | None = None,
    ) -> None:
        # from a checkpoint's hyper-parameters the configs come back as plain dicts
        model = _as(ModelConfig, model)
        lr_schedule = _as(LRSchedule, lr_schedule)
        sampling = _as(SamplingConfig, sampling)
        loss = _as(GRPOLossConfig, loss)
        update = _as(UpdateConfig, update)
        embedding_cache = _as(EmbeddingCacheConfig, embedding_cache)
        dynamic_sampling = _as(DynamicSamplingConfig, dynamic_sampling)
        vllm = _as(VLLMConfig, vllm)
        rewards = [_as(RewardSpec, r) for r in rewards] if rewards is not None else default_rewards()
        super().__init__(model, max_new_tokens or sampling.max_new_tokens)
        self.save_hyperparameters(ignore=["optimizer"])
        self.automatic_optimization = False
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule
        self.sampling = sampling
        self.loss_config = loss
        self.update_config = update
        self.reward = CombinedReward(rewards)
        if dynamic_sampling.enabled and "accuracy" not in self.reward.names:
            raise ValueError("dynamic_sampling needs a reward term named 'accuracy' (it drops groups that are all right or all wrong)")
        self.rollout_engine_name = rollout_engine
        self.vllm_config = vllm
        self.cache = VideoEmbeddingCache(embedding_cache)
        self.dynamic_sampling = dynamic_sampling
        self.reference_path = reference or model.path
        self.advantage_eps = advantage_eps
        self.rollout_seed = rollout_seed
        self.ref: VideoLanguageModel | None = None
        self.engine = None
        self.generator: torch.Generator | None = None
        self.buffer: list[RolloutGroups] = []
        self.tries = 0
        self.last_rollouts: RolloutView | None = None  # latest questions and texts (sample logging)
        self.last_groups: RolloutGroups | None = None  # latest groups that updated the policy
        self.policy_updated = False  # the latest training step ran an optimizer step
        self._pending_generator_state: Tensor | None = None
        self._restored: dict[str, Any] | None = None  # this rank's GRPO state from a checkpoint

    # ------------------------------------------------------------------------------- set-up
    def configure_model(self) -> None:
        super().configure_model()
        if self.ref is None and self.loss_config.kl_coef > 0:
            ref_config = ModelConfig(self.reference_path, self.model_config.dtype, self.model_config.attn_implementation,
                                     freeze_vision=True)
            self.ref = load_model(ref_config, self.processor).eval().requires_grad_(False)
        if self.engine is None:
            self.engine = build_engine(self.rollout_engine_name, self.model, self.vllm_config)
            self.engine.weights_provider = self.policy_weights

    def configure_callbacks(self) -> list[L.Callback]:
        """An engine with its own copy of the weights gets a :class:`VLLMWeightSync` unless the
        trainer already has one (configured, for instance, to sync every N steps)."""
        from lightning_longrl.callbacks.vllm_sync import VLLMWeightSync

        present = self._trainer is not None and any(isinstance(c, VLLMWeightSync) for c in self.trainer.callbacks)
        if engine_class(self.rollout_engine_name).needs_weight_sync and not present:
            return [VLLMWeightSync()]
        return []

    def policy_weights(self) -> Iterator[tuple[str, Tensor]]:
        """The policy's full weights by Hugging Face name (gathered across ranks under FSDP)."""
        root = self.trainer.strategy.model if self._trainer is not None else None
        return full_weights(self.model.hf, root)

    def sync_rollout_weights(self) -> None:
        """Make the rollout engine sample from the policy's current weights."""
        self.engine.load_weights(self.policy_weights())

    def collate_mode(self, stage: str) -> Literal["sft", "prompt"]:
        return "prompt"  # GRPO generates for every stage

    @property
    def vision_trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.vision_tower.parameters())

    @property
    def _ref_shares_vision(self) -> bool:
        """The reference's vision tower equals the policy's (frozen, same checkpoint): reuse its embeddings."""
        return not self.vision_trainable and self.reference_path == self.model_config.path

    def _rollout_generator(self) -> torch.Generator:
        if self.generator is None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(self.rollout_seed + self.data_rank)
            if self._pending_generator_state is not None:
                self.generator.set_state(self._pending_generator_state)
                self._pending_generator_state = None
        return self.generator

    # ------------------------------------------------------------------------------ encoding
    def _encoder(self, model: VideoLanguageModel, pixels: list[Tensor], grids: Tensor, timer: PhaseTimer, grad: bool = False):
        """A function encoding the videos at given positions in one vision-tower call (split over
        the sequence-parallel group under MR-SP)."""

        def encode(positions: list[int]) -> list[VideoEmbeddings]:
            with timer("encode"), torch.set_grad_enabled(grad):
                out = sp_encode_video(model, torch.cat([pixels[p] for p in positions]), grids[positions], self.sp_group)
            return out.split(model.spatial_merge_size)

        return encode

    def _pass_videos(self, groups: RolloutGroups, questions: list[int], namespace: str, timer: PhaseTimer,
                     grad: bool = False) -> VideoEmbeddings:
        """Video embeddings, one per row, for a teacher-forced pass over rows of ``questions``."""
        unique = sorted(set(questions))
        model = self.ref if namespace == "ref" else self.model
        if grad or not self.cache.config.enabled or (namespace == "ref" and not self._ref_shares_vision):
            # re-encode: with grad for a trainable tower, for every pass when the cache is off,
            # and with the reference tower when it differs from the policy's
            grids = torch.stack([groups.videos[q].grid_thw[0] for q in unique])
            encode = self._encoder(model, [groups.pixel_values[q] for q in unique], grids, timer, grad)
            if grad:
                fresh = self.cache.encode_uncached(encode, list(range(len(unique))))
            else:
                fresh = self.cache.get(namespace, [groups.video_keys[q] for q in unique], encode, self.device)
            by_question = dict(zip(unique, fresh))
        else:
            by_question = {q: groups.videos[q] for q in unique}
        return VideoEmbeddings.cat([by_question[q] for q in questions])

    # ------------------------------------------------------------------------------ rollouts
    def _rollout(self, batch: VideoBatch, timer: PhaseTimer) -> RolloutGroups:
        g = self.sampling.num_samples
        pixels = list(batch.pixel_values_videos.split(batch.video_grid_thw.prod(-1).tolist()))
        encode = self._encoder(self.model, pixels, batch.video_grid_thw, timer)
        generator = self._rollout_generator()

        def request(videos: list[VideoEmbeddings], samples: int) -> RolloutRequest:
            return RolloutRequest(batch.input_ids, batch.attention_mask, videos, batch.second_per_grid_ts, samples)

        if self.cache.config.enabled:
            videos = self.cache.get("policy", batch.video_keys, encode, self.device)
            with timer("rollout"):
                generation = self.engine.generate(request(videos, g), self.sampling, generator)
        else:
            # every rollout encodes its video again; rows come back sample-major, reorder them
            parts = []
            for _ in range(g):
                videos = self.cache.get("policy", batch.video_keys, encode, self.device)
                with timer("rollout"):
                    parts.append(self.engine.generate(request(videos, 1), self.sampling, generator))
            generation = _interleave(parts, self.model.pad_token_id)
        self.engine.release()  # free the engine's memory for the update phase (GPU)
        with timer("reward"):
            texts = decode_responses(self.model, generation)
            records = [r for r in batch.records for _ in range(g)]
            scores = self.reward(texts, records)
            shape = (len(batch), g)
            rewards = torch.tensor(scores.total, dtype=torch.float32).view(shape)
            terms = {k: torch.tensor(v, dtype=torch.float32).view(shape) for k, v in scores.terms.items()}
            advantages = group_advantages(rewards, self.advantage_eps)
        keep_pixels = self.vision_trainable or not self.cache.config.enabled or (self.ref is not None and not self._ref_shares_vision)
        prompts = [ids[mask.bool()] for ids, mask in zip(batch.input_ids, batch.attention_mask)]
        groups = RolloutGroups(
            prompt_ids=prompts, video_keys=list(batch.video_keys), videos=videos,
            pixel_values=[p if keep_pixels else None for p in pixels],
            second_per_grid_ts=batch.second_per_grid_ts, responses=generation.tokens,
            response_mask=generation.mask, rollout_logprobs=generation.logprobs,
            rewards=rewards.to(self.device), terms={k: v.to(self.device) for k, v in terms.items()},
            advantages=advantages.to(self.device),
        )
        self.last_rollouts = RolloutView(list(batch.records), texts, rewards, pixels, batch.video_grid_thw)
        return groups

    # -------------------------------------------------------------------------------- update
    def _scores(self, model: VideoLanguageModel, groups: RolloutGroups, rows: list[int], namespace: str,
                timer: PhaseTimer, grad: bool = False, entropy: bool = False):
        """Log-probs (and entropies) ``[n, T]`` of the responses in ``rows``, response-aligned."""
        temperature = self.sampling.temperature
        sp_group = self.sp_group
        if sp_group is None and self.update_config.shared_prefill and not (grad and model.hf.is_gradient_checkpointing):
            # one prefill of each question's video and prompt, shared by its responses
            g = groups.group_size
            questions = sorted({r // g for r in rows})
            video = self._pass_videos(groups, questions, namespace, timer, grad)
            ids, mask = left_pad([groups.prompt_ids[q].to(self.device) for q in questions], self.model.pad_token_id)
            prompts = model.embed(ids, mask, video, groups.second_per_grid_ts[questions])
            prompt_of_row = torch.tensor([questions.index(r // g) for r in rows], device=self.device)
            scores = model.score_responses(prompts, prompt_of_row, groups.responses[rows], groups.response_mask[rows],
                                           temperature, entropy, exclude_vision_tokens=True)
            return scores.logprobs, scores.entropy
        packed = pack_rows(groups, rows, self.model.pad_token_id)
        video = self._pass_videos(groups, packed.questions, namespace, timer, grad)
        spg = groups.second_per_grid_ts[packed.questions]
        inputs = model.embed(packed.input_ids, packed.attention_mask, video, spg)
        # under MR-SP the prefill is split along the sequence over the group
        scores = score_sequence(model, inputs, packed.input_ids, packed.target_mask, sp_group, temperature, entropy,
                                exclude_vision_tokens=True)
        width = groups.responses.shape[1]
        logprobs = to_response_layout(scores.logprobs, packed, width)
        ent = to_response_layout(scores.entropy, packed, width) if entropy else None
        return logprobs, ent

    def _update(self, groups: RolloutGroups, timer: PhaseTimer) -> dict[str, float]:
        rows_total = groups.num_groups * groups.group_size
        mini = self.update_config.mini_batch_size or rows_total
        micro = min(self.update_config.micro_batch_size or mini, mini)
        mask = groups.response_mask
        advantages = groups.advantages.flatten()
        old = torch.zeros_like(groups.rollout_logprobs)
        ref = torch.zeros_like(old) if self.ref is not None else None
        with torch.no_grad():
            for rows in _chunks(list(range(rows_total)), micro):
                with timer("old_policy"):
                    old[rows] = self._scores(self.model, groups, rows, "policy", timer)[0]
                if ref is not None:
                    with timer("reference"):
                        ref[rows] = self._scores(self.ref, groups, rows, "ref", timer)[0]
        optimizer = self.optimizers()
        sums = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "grad_norm": 0.0}
        steps = 0
        entropy_tokens = 0.0
        with timer("update"):
            for _ in range(self.update_config.epochs):
                order = torch.randperm(rows_total, generator=torch.Generator().manual_seed(self._order_seed())).tolist()
                for mini_rows in _chunks(order, mini):
                    tokens = float(mask[mini_rows].sum())
                    normalizer = tokens if self.loss_config.aggregation == "token_mean" else float(len(mini_rows))
                    for rows in _chunks(mini_rows, micro):
                        logprobs, entropy = self._scores(self.model, groups, rows, "policy", timer,
                                                         grad=self.vision_trainable, entropy=True)
                        terms = grpo_loss(self.loss_config, logprobs, old[rows], advantages[rows], mask[rows],
                                          None if ref is None else ref[rows], max(normalizer, 1.0),
                                          groups.rollout_logprobs[rows])
                        self.manual_backward(terms.loss)
                        share = float(mask[rows].sum()) / max(tokens, 1.0)
                        sums["loss"] += float(terms.loss.detach())
                        sums["policy_loss"] += float(terms.policy_loss)
                        sums["kl"] += float(terms.kl)
                        sums["clip_fraction"] += float(terms.clip_fraction) * share
                        sums["entropy"] += float((entropy * mask[rows]).sum())
                        entropy_tokens += float(mask[rows].sum())
                    sums["grad_norm"] += self._optimizer_step(optimizer)
                    steps += 1
        out = {f"policy/{k}": v / max(steps, 1) for k, v in sums.items() if k != "entropy"}
        out["policy/entropy"] = sums["entropy"] / max(entropy_tokens, 1.0)
        out["policy/optimizer_steps"] = float(steps)
        # rollout/trainer agreement: the engine's sampling log-probs vs the trainer's, same weights
        gap = (old - groups.rollout_logprobs).abs() * mask
        out["rollout/logprob_diff_mean"] = float(gap.sum() / mask.sum().clamp(min=1))
        out["rollout/logprob_diff_max"] = float(gap.max()) if gap.numel() else 0.0
        if self.loss_config.rollout_is_cap is not None:
            weights = rollout_importance_weights(old, groups.rollout_logprobs, self.loss_config.rollout_is_cap)
            out["rollout/is_weight_mean"] = float((weights * mask).sum() / mask.sum().clamp(min=1))
        return out

    def _order_seed(self) -> int:
        return self.rollout_seed * 1_000_003 + self.global_step * 7919 + self.data_rank

    def _optimizer_step(self, optimizer) -> float:
        norm = 0.0
        limit = self.update_config.max_grad_norm
        if limit is not None:
            wrapped = self.trainer.strategy.model
            if hasattr(wrapped, "clip_grad_norm_"):  # FSDP: the norm over all shards
                norm = float(wrapped.clip_grad_norm_(limit))
            else:  # plain, or FSDP2 (DTensor) next to replicated parameters
                norm = clip_grad_norm([p for p in self.model.parameters() if p.requires_grad], limit)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    # ------------------------------------------------------------------------------ training
    def training_step(self, batch: VideoBatch, batch_idx: int) -> None:
        began = time.perf_counter()
        self.last_rollouts = self.last_groups = None  # release the previous step's tensors
        timer = PhaseTimer()
        timer.add("decode", batch.decode_seconds)
        self.cache.reset_counters()
        metrics: dict[str, float] = {"data/skipped_videos": float(batch.skipped_total)}
        groups = None
        if len(batch):
            groups = self._rollout(batch, timer)
            metrics.update(self._rollout_metrics(groups))
        ready = groups
        if self.dynamic_sampling.enabled:
            ready = self._dynamic_sampling(groups, len(batch), metrics)
        # data-parallel ranks must run the same number of backward passes, so they decide together
        rows = ready.num_groups * ready.group_size if ready is not None else 0
        if reduce_scalar(rows, "min") != reduce_scalar(rows, "max"):
            raise RuntimeError(
                f"this rank has {rows} responses to learn from and another rank a different number, so their "
                "gradient all-reduces would not line up; multi-process GRPO needs every batch to keep all its "
                "videos readable (and equal batch sizes on every rank)"
            )
        self.policy_updated = bool(rows)
        if rows:
            self.last_groups = ready
            metrics.update(self._update(ready, timer))
            metrics["policy/lr"] = float(self.optimizers().param_groups[0]["lr"])
        scheduler = self.lr_schedulers()
        if scheduler is not None and rows:  # the schedule counts policy updates
            scheduler.step()
        metrics["vision/encoder_calls"] = float(self.cache.encoder_calls)
        metrics["vision/encoded_videos"] = float(self.cache.encoded_videos)
        metrics["vision/cache_hits"] = float(self.cache.hits)
        for phase, seconds in timer.seconds.items():
            metrics[f"time/{phase}"] = seconds
        metrics["time/step"] = time.perf_counter() - began
        size = max(len(batch), 1)
        self.log_dict(metrics, batch_size=size)
        self.log("reward", metrics.get("reward/total_mean", 0.0), prog_bar=True, batch_size=size, logger=False)

    def _rollout_metrics(self, groups: RolloutGroups) -> dict[str, float]:
        out = {}
        for name, values in [("total", groups.rewards), *groups.terms.items()]:
            out[f"reward/{name}_mean"] = float(values.mean())
            out[f"reward/{name}_std"] = float(values.std(unbiased=False))
        lengths = groups.response_mask.sum(-1).float()
        out["response/length_mean"] = float(lengths.mean())
        out["response/length_max"] = float(lengths.max())
        ended = (groups.responses == self.model.eos_token_id) & groups.response_mask
        out["response/truncated_fraction"] = float(1.0 - ended.any(-1).float().mean())
        adv = groups.advantages
        out["advantage/mean"] = float(adv.mean())
        out["advantage/std"] = float(adv.std(unbiased=False))
        out["advantage/abs_mean"] = float(adv.abs().mean())
        out["advantage/max"] = float(adv.max())
        out["advantage/min"] = float(adv.min())
        out["groups/all_equal_fraction"] = float((groups.rewards == groups.rewards[:, :1]).all(-1).float().mean())
        return out

    def _dynamic_sampling(self, groups: RolloutGroups | None, wanted: int, metrics: dict[str, float]) -> RolloutGroups | None:
        """Add this round's informative groups to the buffer; return a full batch when there is one."""
        self.tries += 1
        if groups is not None:
            keep = informative_groups(groups.terms["accuracy"]).nonzero().flatten().tolist()
            metrics["groups/kept_fraction"] = len(keep) / groups.num_groups
            if keep:
                self.buffer.append(groups.select(keep))
        buffered = sum(b.num_groups for b in self.buffer)
        metrics["groups/buffered"] = float(buffered)
        # every rank decides together and takes as many groups as the poorest rank has, or the
        # data-parallel gradient all-reduces would not line up
        wanted = int(reduce_scalar(wanted, "min"))
        available = int(reduce_scalar(buffered, "min"))
        if available < max(wanted, 1) and self.tries < self.dynamic_sampling.max_tries:
            return None
        self.tries = 0
        take = min(wanted, available) if wanted else available
        merged = RolloutGroups.cat(self.buffer, self.model.pad_token_id) if self.buffer else None
        self.buffer = []  # a surplus is dropped (as DAPO does): after this update it would be off-policy
        if not take:
            return None
        metrics["groups/dropped_surplus"] = float(merged.num_groups - take)
        return merged.select(list(range(take)))

    # ---------------------------------------------------------------------------- evaluation
    def validation_step(self, batch: VideoBatch, batch_idx: int) -> None:
        self.evaluate_batch(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_category_accuracy("val")

    # ------------------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": self.lr_schedule.build(optimizer, total)}

    # ----------------------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # the reference model is frozen and reloaded from its own folder: not worth a copy per checkpoint
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("ref.")}
        local = {
            "generator": self._rollout_generator().get_state(),
            "cache": self.cache.state_dict(),
            "buffer": [b.state_dict() for b in self.buffer],
            "tries": self.tries,
        }
        checkpoint["grpo"] = {"ranks": gather_objects(local)}  # each rank samples and buffers its own

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ref is not None:
            checkpoint["state_dict"].update({f"ref.{k}": v for k, v in self.ref.state_dict().items()})
        ranks = checkpoint.get("grpo", {}).get("ranks")
        if ranks:
            if len(ranks) != self.trainer.world_size:
                raise ValueError(f"this GRPO checkpoint was written by {len(ranks)} processes; resume it with as many "
                                 f"(this run has {self.trainer.world_size})")
            # applied in on_train_start, once the strategy has moved the module to its device
            self._restored = ranks[self.global_rank]

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self.engine is not None:
            self.engine.close()  # a vLLM engine's memory goes back before testing or exporting

    def on_train_start(self) -> None:
        state, self._restored = self._restored, None
        if state is None:
            return
        self.generator = None
        self._pending_generator_state = state["generator"]
        self.cache.load_state_dict(state["cache"], self.device)
        self.buffer = [RolloutGroups.from_state_dict(b, self.device) for b in state["buffer"]]
        self.tries = int(state["tries"])


def _as(cls, value):
    """A config dataclass from ``None`` (defaults), a dict (checkpoint hyper-parameters) or itself."""
    if value is None:
        return cls()
    return cls(**value) if isinstance(value, dict) else value


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _interleave(parts: list[Generation], pad_id: int) -> Generation:
    """G generations of one sample per prompt -> one generation with prompt-major rows."""
    stacked = cat_generations(parts, pad_id)  # rows: sample-major
    g, b = len(parts), parts[0].tokens.shape[0]
    order = torch.arange(g * b).view(g, b).t().flatten()
    return Generation(stacked.tokens[order], stacked.logprobs[order], stacked.mask[order])
