"""Benchmark metrics as a torchmetrics ``Metric``: counts summed over batches and over ranks.

Per result group (category): questions answered, answered correctly, answered in the expected
format; plus videos that could not be read. Unreadable questions count as wrong in the overall
accuracy (they are part of the benchmark) and are reported separately.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class BenchmarkMetrics(Metric):
    """Accuracy per group and overall, format-compliance rate and unreadable-video count.

    Args:
        groups: the result groups in report order (every rank must pass the same list).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, groups: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        if not groups:
            raise ValueError("BenchmarkMetrics needs at least one group")
        self.groups = list(groups)
        n = len(self.groups)
        for name in ("correct", "answered", "well_formed", "unreadable"):
            self.add_state(name, default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    def _index(self, group: str | None) -> int:
        name = group or "Other"
        if name not in self.groups:
            raise KeyError(f"group {name!r} is not one of {self.groups}")
        return self.groups.index(name)

    def update(self, groups: Sequence[str | None], correct: Sequence[bool], well_formed: Sequence[bool],
               unreadable: Sequence[bool] | None = None) -> None:
        """Questions: their groups, whether each was answered right and in the expected format, and
        (optionally) whether its video could not be read (then it was not answered at all)."""
        flags = unreadable if unreadable is not None else [False] * len(groups)
        for group, ok, formed, bad in zip(groups, correct, well_formed, flags, strict=True):
            i = self._index(group)
            if bad:
                self.unreadable[i] += 1
                continue
            self.answered[i] += 1
            self.correct[i] += float(ok)
            self.well_formed[i] += float(formed)

    def compute(self) -> dict[str, float]:
        """``accuracy``, ``accuracy/<group>``, ``format_rate``, ``questions``, ``unreadable``,
        ``questions/<group>``; accuracies over all questions of a group (unreadable ones count as wrong)."""
        total = self.answered + self.unreadable
        out: dict[str, float] = {
            "accuracy": float(self.correct.sum() / total.sum().clamp(min=1)),
            "format_rate": float(self.well_formed.sum() / self.answered.sum().clamp(min=1)),
            "questions": float(total.sum()),
            "unreadable": float(self.unreadable.sum()),
        }
        for i, name in enumerate(self.groups):
            if total[i] > 0:
                out[f"accuracy/{name}"] = float(self.correct[i] / total[i])
                out[f"questions/{name}"] = float(total[i])
        return out
