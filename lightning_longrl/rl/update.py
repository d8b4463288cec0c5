"""How a step's sampled responses update the policy: epochs, mini- and micro-batches, clipping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
    old_policy_pass: Literal["auto", "always"] = "auto"
    """``auto``: with one epoch of one mini-batch the policy cannot move before a response is
    scored, so the old-policy log-probs are the update's own (detached; the ratio is exactly 1) and
    that pass is skipped, as TRL does. ``always``: a separate no-grad pass first."""

    def __post_init__(self) -> None:
        for name in ("mini_batch_size", "micro_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"update {name} must be >= 1 or None, got {value}")
        if self.epochs < 1:
            raise ValueError(f"update epochs must be >= 1, got {self.epochs}")
        if self.old_policy_pass not in ("auto", "always"):
            raise ValueError(f"update old_policy_pass must be 'auto' or 'always', got {self.old_policy_pass!r}")

    def sizes(self, rows: int) -> tuple[int, int]:
        """(mini-batch, micro-batch) sizes for ``rows`` responses."""
        mini = self.mini_batch_size or rows
        return mini, min(self.micro_batch_size or mini, mini)

    def needs_old_policy_pass(self, rows: int) -> bool:
        """Whether the policy can change between sampling and scoring some response of the step."""
        return self.old_policy_pass == "always" or self.epochs > 1 or self.sizes(rows)[0] < rows


def chunks(items: list[int], size: int) -> list[list[int]]:
    """``items`` in consecutive pieces of ``size`` (the last may be shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]
