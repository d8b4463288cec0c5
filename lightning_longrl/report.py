"""Accuracy tables from saved test metrics (the shape of the paper's Table 4)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lightning_longrl.data.records import CATEGORIES


def load_metrics(path: str | Path) -> dict[str, float]:
    """Metrics written by :class:`~lightning_longrl.callbacks.MetricsJSON`.

    Raises:
        FileNotFoundError: naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}; run `lightning-longrl test` with the MetricsJSON callback first")
    return json.loads(path.read_text())


def accuracy_table(runs: Sequence[tuple[str, dict[str, float]]], prefix: str = "test") -> str:
    """A Markdown table: one row per run, columns per reasoning category and overall (in %)."""
    categories = [c for c in CATEGORIES if any(f"{prefix}/accuracy/{c}" in m for _, m in runs)]
    header = ["Model", *categories, "Overall", "Format"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in runs:
        cells = [name]
        for key in [*(f"{prefix}/accuracy/{c}" for c in categories), f"{prefix}/accuracy", f"{prefix}/format_rate"]:
            cells.append(f"{100 * metrics[key]:.1f}" if key in metrics else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
