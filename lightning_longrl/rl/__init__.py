"""Stage-2 reinforcement learning parts: rewards, advantages, the GRPO objective, rollouts and the
video-embedding cache. :class:`lightning_longrl.stages.grpo.GRPOModule` wires them together."""
