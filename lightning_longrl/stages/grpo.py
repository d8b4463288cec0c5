"""Stage 2: GRPO on long videos, with every video encoded once per step.

One training step (one batch of B questions) is the paper's algorithm, top to bottom in
:meth:`GRPOModule.training_step`:

1. **trajectory** (:func:`~lightning_longrl.rl.trajectory.sample_groups`): encode each video once
   (or take it from the :class:`VideoEmbeddingCache`), sample G responses per question through a
   :class:`RolloutEngine` fed with those embeddings, score them, turn the rewards into advantages
   (:class:`~lightning_longrl.rl.advantages.AdvantageConfig`: GRPO's group normalisation, Dr.
   GRPO's group mean, RLOO or REINFORCE++); optionally keep only mixed groups until the batch is full
   (:class:`~lightning_longrl.rl.dynamic_sampling.GroupBuffer`);
2. **old policy and reference** log-probs of the responses from the same embeddings
   (:meth:`~lightning_longrl.rl.scoring.ResponseScorer.before_update`; the old-policy pass is
   skipped when the policy cannot move before scoring);
3. **update**: the policy objective (:class:`~lightning_longrl.rl.objective.GRPOLossConfig`:
   GRPO's clipped token ratio, GSPO's clipped sequence ratio or CISPO's clipped weights) with a
   KL penalty, over mini-batches and epochs.

How a pass runs (a prefill shared by a question's responses, full sequences, or a
sequence-parallel prefill under MR-SP) is decided in :mod:`lightning_longrl.rl.scoring`, not here.
With the cache switched off every rollout and every pass re-encodes its video, as RL frameworks
without the cache do, so the saving can be measured (``benchmarks/embedding_cache.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from lightning_longrl.data.collate import VideoBatch
from lightning_longrl.distributed import gather_objects, reduce_scalar
from lightning_longrl.importing import from_class_path_config
from lightning_longrl.models.config import ModelConfig, load_model
from lightning_longrl.models.lora import adapter_scalings, adapters_disabled, merged_weights
from lightning_longrl.models.video_lm import VideoLanguageModel
from lightning_longrl.parallel.grads import clip_grad_norm
from lightning_longrl.parallel.weights import full_weights
from lightning_longrl.rl.advantages import AdvantageConfig
from lightning_longrl.rl.dynamic_sampling import DynamicSamplingConfig, GroupBuffer
from lightning_longrl.rl.embedding_cache import EmbeddingCacheConfig, VideoEmbeddingCache
from lightning_longrl.rl.groups import RolloutGroups
from lightning_longrl.rl.monitoring import PhaseTimer
from lightning_longrl.rl.objective import GRPOLossConfig, grpo_loss, rollout_importance_weights
from lightning_longrl.rl.rewards import CombinedReward, OverlongPenalty, RewardSpec, default_rewards
from lightning_longrl.rl.rollout import (
    EngineFactory,
    PolicyRolloutEngine,
    SamplingConfig,
    check_engine_factory,
    engine_type,
)
from lightning_longrl.rl.scoring import PassLogprobs, ResponseScorer
from lightning_longrl.rl.temporal import TemporalContrastConfig
from lightning_longrl.rl.trajectory import RolloutView, sample_groups
from lightning_longrl.rl.update import UpdateConfig, chunks
from lightning_longrl.stages.base import VideoQAStage
from lightning_longrl.stages.optim import LRSchedule

log = logging.getLogger(__name__)

__all__ = ["DynamicSamplingConfig", "GRPOModule", "RolloutView", "UpdateConfig"]


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
        rollout_engine: what samples the rollouts, configured as a class (YAML ``class_path`` and
            ``init_args``): :class:`~lightning_longrl.rl.rollout.PolicyRolloutEngine` (the policy's own
            ``generate``), :class:`~lightning_longrl.rl.vllm_engine.VLLMRolloutEngine` (an in-process
            vLLM engine per rank, its settings as its ``init_args``, kept in sync by
            :class:`~lightning_longrl.callbacks.VLLMWeightSync`, added when the trainer has none), or
            any callable building a :class:`~lightning_longrl.rl.rollout.RolloutEngine` for the policy.
        embedding_cache: the video-embedding cache and its off switch.
        dynamic_sampling: online filtering of groups with all-equal accuracy.
        reference: checkpoint of the frozen reference model (default: ``model.path``).
        advantage: the advantage estimator (``grpo``, ``group_mean``, ``rloo``, ``reinforce_pp``)
            and its ``eps``.
        overlong_penalty: DAPO's soft length penalty, added to the rewards (off by default).
        temporal_contrast: Video-R1's temporal bonus from G more responses on each video with its
            cached embeddings' frames shuffled (off by default; needs a reward term ``accuracy``).
        advantage_eps: deprecated, ``advantage.eps``.
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
        rollout_engine: EngineFactory = PolicyRolloutEngine,
        embedding_cache: EmbeddingCacheConfig | None = None,
        dynamic_sampling: DynamicSamplingConfig | None = None,
        reference: str | None = None,
        advantage: AdvantageConfig | None = None,
        overlong_penalty: OverlongPenalty | None = None,
        temporal_contrast: TemporalContrastConfig | None = None,
        advantage_eps: float | None = None,
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
        if isinstance(rollout_engine, dict):  # from a checkpoint's hyper-parameters
            rollout_engine = from_class_path_config(rollout_engine, "rollout_engine")
        rollout_engine = check_engine_factory(rollout_engine, "GRPOModule rollout_engine")
        advantage = _as(AdvantageConfig, advantage)
        overlong_penalty = _as(OverlongPenalty, overlong_penalty)
        temporal_contrast = _as(TemporalContrastConfig, temporal_contrast)
        if advantage_eps is not None:
            warnings.warn("GRPOModule(advantage_eps=...) is deprecated; use advantage: {eps: ...}", DeprecationWarning,
                          stacklevel=2)
            advantage = dataclasses.replace(advantage, eps=advantage_eps)
        if loss.aggregation == "sequence_sum" and loss.length_normalizer is None:
            loss = dataclasses.replace(loss, length_normalizer=sampling.max_new_tokens)  # Dr. GRPO's constant
        if overlong_penalty.enabled and overlong_penalty.buffer >= sampling.max_new_tokens:
            raise ValueError(f"overlong_penalty buffer ({overlong_penalty.buffer}) must be below sampling "
                             f"max_new_tokens ({sampling.max_new_tokens})")
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
        for option, enabled, why in (
            ("temporal_contrast", temporal_contrast.enabled, "it compares accuracy on ordered and shuffled frames"),
            ("dynamic_sampling", dynamic_sampling.enabled, "it drops groups that are all right or all wrong"),
        ):
            if enabled and "accuracy" not in self.reward.names:
                raise ValueError(f"{option} needs a reward term named 'accuracy' ({why})")
        self.rollout_engine = rollout_engine
        self.cache = VideoEmbeddingCache(embedding_cache)
        self.dynamic_sampling = dynamic_sampling
        self.reference_path = reference or model.path
        self.advantage = advantage
        self.overlong_penalty = overlong_penalty
        self.temporal_contrast = temporal_contrast
        self.rollout_seed = rollout_seed
        self.ref: VideoLanguageModel | None = None
        self.engine = None
        self.generator: torch.Generator | None = None
        self.group_buffer = GroupBuffer(dynamic_sampling, self.processor.tokenizer.pad_token_id)
        self.scorer = ResponseScorer(self.cache, update, sampling, self.processor.tokenizer.pad_token_id,
                                     sp_group=lambda: self.sp_group, ref_shares_vision=lambda: self._ref_shares_vision)
        self.last_rollouts: RolloutView | None = None  # latest questions and texts (sample logging)
        self.last_groups: RolloutGroups | None = None  # latest groups that updated the policy
        self.policy_updated = False  # the latest training step ran an optimizer step
        self._pending_generator_state: Tensor | None = None
        self._restored: dict[str, Any] | None = None  # this rank's GRPO state from a checkpoint

    # ------------------------------------------------------------------------------- set-up
    def configure_model(self) -> None:
        super().configure_model()
        if self.ref is None and self.loss_config.kl_coef > 0 and not self.reference_is_base:
            ref_config = ModelConfig(self.reference_path, self.model_config.dtype, self.model_config.attn_implementation,
                                     freeze_vision=True)
            self.ref = load_model(ref_config, self.processor).eval().requires_grad_(False)
        if self.engine is None:
            self.engine = self.rollout_engine(self.model)
            self.engine.weights_provider = self.policy_weights

    @property
    def reference_is_base(self) -> bool:
        """The KL reference is the policy's own frozen base weights, its LoRA adapters disabled
        (no second copy of the model is loaded)."""
        return self.model_config.lora is not None and self.reference_path == self.model_config.path

    def reference_context(self) -> contextlib.AbstractContextManager:
        """Entered around every reference pass: the adapters off when the reference is the base."""
        return adapters_disabled(self.model.hf) if self.reference_is_base else contextlib.nullcontext()

    @property
    def reference(self) -> VideoLanguageModel | None:
        """The model the KL term compares with (``None`` without a KL term); score it inside
        :meth:`reference_context`."""
        if self.loss_config.kl_coef <= 0:
            return None
        return self.model if self.reference_is_base else self.ref

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[VideoLanguageModel | None]:
        """:attr:`reference`, ready to score."""
        with self.reference_context():
            yield self.reference

    def configure_callbacks(self) -> list[L.Callback]:
        """What correctness needs, unless the trainer already has one of its kind (configured, for
        instance, to sync every N steps): an engine with its own copy of the weights gets a
        :class:`VLLMWeightSync`; a trainable vision tower an :class:`EmbeddingCacheInvalidation`,
        so cached embeddings cannot go stale by omission."""
        from lightning_longrl.callbacks.embedding_cache import EmbeddingCacheInvalidation
        from lightning_longrl.callbacks.vllm_sync import VLLMWeightSync

        def present(kind: type) -> bool:
            return self._trainer is not None and any(isinstance(c, kind) for c in self.trainer.callbacks)

        needed = []
        # a factory whose class is not known before it runs (a lambda) gets the callback too: it
        # does nothing for an engine that samples from the policy itself
        built = engine_type(self.rollout_engine)
        if (built is None or built.needs_weight_sync) and not present(VLLMWeightSync):
            needed.append(VLLMWeightSync())
        if not self.model_config.freeze_vision and not present(EmbeddingCacheInvalidation):
            needed.append(EmbeddingCacheInvalidation())
        return needed

    def policy_weights(self) -> Iterator[tuple[str, Tensor]]:
        """The policy's full weights by Hugging Face name (gathered across ranks under FSDP)."""
        root = self.trainer.strategy.model if self._trainer is not None else None
        weights = full_weights(self.model.hf, root)
        scalings = adapter_scalings(self.model.hf)
        return merged_weights(weights, scalings) if scalings else weights

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

    # ------------------------------------------------------------------------------ training
    def training_step(self, batch: VideoBatch, batch_idx: int) -> None:
        """One GRPO step over a batch of B questions (see the module docstring)."""
        began = time.perf_counter()
        self.last_rollouts = self.last_groups = None  # release the previous step's tensors
        timer = PhaseTimer()
        timer.add("decode", batch.decode_seconds)
        self.cache.reset_counters()
        metrics: dict[str, float] = {"data/skipped_videos": float(batch.skipped_total)}
        batch = self._questions_every_rank_has(batch, metrics)
        # 1. trajectory: encode once, sample G, reward, group advantages (B groups of G responses)
        groups = self._trajectory(batch, timer, metrics) if len(batch) else None
        if self.dynamic_sampling.enabled:  # keep mixed groups, sample again until the batch is full
            groups = self.group_buffer.add(groups, len(batch), metrics)
        rows = _rows_on_every_rank(groups)
        self.policy_updated = bool(rows)
        if rows:
            self.last_groups = groups
            # 2. old-policy and reference log-probs [B*G, T], from the rollout's embeddings
            passes = self.scorer.before_update(self.model, self.reference, groups, timer, self.reference_context)
            # 3. clipped-ratio update with the KL penalty
            metrics.update(self._update(groups, passes, timer))
            metrics["policy/lr"] = float(self.optimizers().param_groups[0]["lr"])
            if (scheduler := self.lr_schedulers()) is not None:  # the schedule counts policy updates
                scheduler.step()
        self._log_step(metrics, timer, time.perf_counter() - began, len(batch))

    def _questions_every_rank_has(self, batch: VideoBatch, metrics: dict[str, float]) -> VideoBatch:
        """The batch cut to as many questions as the rank with the fewest readable videos has: data-parallel
        ranks must sample, score and backpropagate the same number of groups (their collectives and
        gradient all-reduces line up), so an unreadable video on one rank trims the others' batches
        for this step (counted in ``data/trimmed_questions``) instead of stopping the run."""
        fewest = int(reduce_scalar(len(batch), "min"))
        metrics["data/trimmed_questions"] = float(len(batch) - fewest)
        if fewest < len(batch):
            log.warning("GRPO step %d: another rank has %d readable question(s) in its batch; this rank trims its %d to "
                        "match", self.global_step, fewest, len(batch))
        return batch.first(fewest)

    def _trajectory(self, batch: VideoBatch, timer: PhaseTimer, metrics: dict[str, float]) -> RolloutGroups:
        keep_pixels = self.vision_trainable or not self.cache.config.enabled or (self.ref is not None and not self._ref_shares_vision)
        groups, self.last_rollouts = sample_groups(
            self.model, self.engine, self.cache, batch, self.sampling, self.reward, self._rollout_generator(), timer,
            self.device, self.sp_group, keep_pixels, self.advantage, self.overlong_penalty,
            self.temporal_contrast)
        metrics.update(self._rollout_metrics(groups))
        return groups

    def _update(self, groups: RolloutGroups, passes: PassLogprobs, timer: PhaseTimer) -> dict[str, float]:
        """Mini-batch steps over the step's responses; statistics stay tensors until one host sync."""
        rows_total = groups.num_groups * groups.group_size
        mini, micro = self.update_config.sizes(rows_total)
        mask, advantages, ref = groups.response_mask, groups.advantages.flatten(), passes.ref  # [N, T], [N], [N, T]
        # the policy has not moved since sampling: the update's own log-probs are the old policy's
        old = passes.old if passes.old is not None else torch.zeros_like(groups.rollout_logprobs)
        with_entropy = self._logs_this_step()
        zero = torch.zeros((), dtype=torch.float64, device=mask.device)
        sums = {k: zero.clone() for k in ("loss", "policy_loss", "kl", "clip_fraction", "grad_norm", "entropy", "tokens")}
        optimizer, steps = self.optimizers(), 0
        with timer("update"):
            for _ in range(self.update_config.epochs):
                order = torch.randperm(rows_total, generator=torch.Generator().manual_seed(self._order_seed())).tolist()
                for mini_rows in chunks(order, mini):
                    tokens = float(mask[mini_rows].sum())
                    normalizer = tokens if self.loss_config.aggregation == "token_mean" else float(len(mini_rows))
                    for rows in chunks(mini_rows, micro):
                        logprobs, entropy = self.scorer.score(self.model, groups, rows, "policy", timer,
                                                              grad=self.vision_trainable, entropy=with_entropy)
                        if passes.old is None:
                            old[rows] = logprobs.detach()
                        terms = grpo_loss(self.loss_config, logprobs, old[rows], advantages[rows], mask[rows],
                                          None if ref is None else ref[rows], max(normalizer, 1.0),
                                          groups.rollout_logprobs[rows])
                        self.manual_backward(terms.loss)
                        row_tokens = mask[rows].sum()
                        sums["loss"] += terms.loss.detach()
                        sums["policy_loss"] += terms.policy_loss
                        sums["kl"] += terms.kl
                        sums["clip_fraction"] += terms.clip_fraction * row_tokens / max(tokens, 1.0)
                        if entropy is not None:
                            sums["entropy"] += (entropy.detach() * mask[rows]).sum()
                        sums["tokens"] += row_tokens
                    sums["grad_norm"] += self._optimizer_step(optimizer)
                    steps += 1
        # rollout/trainer agreement: the engine's sampling log-probs vs the trainer's, same weights
        gap = (old - groups.rollout_logprobs).abs() * mask
        stats = {f"policy/{k}": v / max(steps, 1) for k, v in sums.items() if k not in ("entropy", "tokens")}
        if with_entropy:
            stats["policy/entropy"] = sums["entropy"] / sums["tokens"].clamp(min=1.0)
        stats["rollout/logprob_diff_mean"] = gap.sum() / mask.sum().clamp(min=1)
        stats["rollout/logprob_diff_max"] = gap.max() if gap.numel() else zero
        if self.loss_config.rollout_is_cap is not None:
            weights = rollout_importance_weights(old, groups.rollout_logprobs, self.loss_config.rollout_is_cap)
            stats["rollout/is_weight_mean"] = (weights * mask).sum() / mask.sum().clamp(min=1)
        values = torch.stack([v.to(torch.float64).reshape(()) for v in stats.values()]).tolist()  # the one host sync
        return {**dict(zip(stats, values)), "policy/optimizer_steps": float(steps)}

    def _order_seed(self) -> int:
        return self.rollout_seed * 1_000_003 + self.global_step * 7919 + self.data_rank

    def _optimizer_step(self, optimizer) -> Tensor:
        norm = torch.zeros(())
        limit = self.update_config.max_grad_norm
        if limit is not None:
            wrapped = self.trainer.strategy.model
            if hasattr(wrapped, "clip_grad_norm_"):  # FSDP: the norm over all shards
                norm = wrapped.clip_grad_norm_(limit)
            else:  # plain, or FSDP2 (DTensor) next to replicated parameters
                norm = torch.as_tensor(clip_grad_norm([p for p in self.model.parameters() if p.requires_grad], limit))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm.detach().to(torch.float64).cpu()

    def _logs_this_step(self) -> bool:
        """Whether the logger writes this step's scalars (entropy is computed only then)."""
        if self._trainer is None:
            return True
        every = int(self.trainer.log_every_n_steps)
        if every == 0:
            return False
        return (self.trainer.fit_loop.epoch_loop._batches_that_stepped + 1) % every == 0 or self.trainer.should_stop

    def _log_step(self, metrics: dict[str, float], timer: PhaseTimer, seconds: float, questions: int) -> None:
        metrics["vision/encoder_calls"] = float(self.cache.encoder_calls)
        metrics["vision/encoded_videos"] = float(self.cache.encoded_videos)
        metrics["vision/cache_hits"] = float(self.cache.hits)
        for phase, phase_seconds in timer.seconds.items():
            metrics[f"time/{phase}"] = phase_seconds
        metrics["time/step"] = seconds
        size = max(questions, 1)
        self.log_dict(metrics, batch_size=size)
        self.log("reward", metrics.get("reward/total_mean", 0.0), prog_bar=True, batch_size=size, logger=False)

    def on_train_batch_end(self, outputs, batch: VideoBatch, batch_idx: int) -> None:
        # callbacks (the sample logger) have read the step's view; its pixels need not outlive the step
        self.last_rollouts = None

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
            **self.group_buffer.state_dict(),  # "buffer", "tries"
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
        self.group_buffer.load_state_dict(state, self.device)


def _as(cls, value):
    """A config dataclass from ``None`` (defaults), a dict (checkpoint hyper-parameters) or itself."""
    if value is None:
        return cls()
    return cls(**value) if isinstance(value, dict) else value


def _rows_on_every_rank(groups: RolloutGroups | None) -> int:
    """Responses this rank learns from, checked equal on every data-parallel rank (their backward
    passes must line up for the gradient all-reduce)."""
    rows = groups.num_groups * groups.group_size if groups is not None else 0
    if reduce_scalar(rows, "min") != reduce_scalar(rows, "max"):
        raise RuntimeError(
            f"this rank has {rows} responses to learn from and another rank a different number, so their "
            "gradient all-reduces would not line up (the batches are trimmed to the same number of questions "
            "first; check that every rank samples the same num_samples)"
        )
    return rows
