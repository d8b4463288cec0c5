"""Tables and figures that compare runs: held-out accuracy per reasoning category (the shape of the
paper's Table 4) and accuracy against input frames for several models (its Figure 8)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lightning_longrl.data.records import CATEGORIES


def load_metrics(path: str | Path) -> dict[str, float]:
    """Accuracy metrics of one evaluated model, from ``lightning-longrl eval``'s ``results.json`` or
    the ``test`` loop's :class:`~lightning_longrl.callbacks.MetricsJSON` file, with plain keys
    (``accuracy``, ``accuracy/<category>``, ``format_rate``). With ``predictions.jsonl`` beside
    ``results.json``, ``top_letter_share`` (the share of the most frequent predicted option) is added.

    Raises:
        FileNotFoundError: naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}; run `lightning-longrl eval` (results.json) or "
                                "`lightning-longrl test` with the MetricsJSON callback first")
    data = json.loads(path.read_text())
    if "metrics" in data:  # eval's results.json
        metrics = dict(data["metrics"])
        predictions = path.with_name("predictions.jsonl")
        if predictions.is_file():
            metrics.update(letter_shares(predictions))
        return metrics
    return {key.split("/", 1)[1]: value for key, value in data.items() if "/" in key}


def letter_shares(predictions: str | Path) -> dict[str, float]:
    """``top_letter``-free summary of a predictions file: ``top_letter_share`` is the share of the
    commonest predicted option letter among all questions (0 when nothing was predicted)."""
    rows = [json.loads(line) for line in Path(predictions).read_text().splitlines() if line.strip()]
    letters = Counter(r.get("prediction") for r in rows if r.get("prediction"))
    return {"top_letter_share": (max(letters.values()) / len(rows)) if letters and rows else 0.0}


def accuracy_table(runs: Sequence[tuple[str, dict[str, float]]], stages: dict[str, tuple[str, str]] | None = None) -> str:
    """A Markdown table: one row per run, columns per reasoning category, overall and format (in %).

    Args:
        runs: (name, metrics from :func:`load_metrics`).
        stages: optional (CoT-SFT, RL) marks per run name, shown in two leading columns as the
            paper's Table 4 does.
    """
    categories = [c for c in CATEGORIES if any(f"accuracy/{c}" in m for _, m in runs)]
    lead = ["CoT-SFT", "RL"] if stages else []
    letters = any("top_letter_share" in m for _, m in runs)
    header = ["Model", *lead, *categories, "Overall", "Format", *(["Top letter"] if letters else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in runs:
        cells = [name, *(stages.get(name, ("", "")) if stages else ())]
        for key in [*(f"accuracy/{c}" for c in categories), "accuracy", "format_rate"]:
            cells.append(f"{100 * metrics[key]:.1f}" if key in metrics else "-")
        if letters:
            cells.append(f"{100 * metrics['top_letter_share']:.0f}%" if "top_letter_share" in metrics else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_frame_scaling(path: str | Path) -> dict[int, float]:
    """Overall accuracy (%) per frame count from ``lightning-longrl eval-frames``' ``frame_scaling.json``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no frame-scaling results at {path}; run `lightning-longrl eval-frames` first")
    data = json.loads(path.read_text())
    return dict(zip(data["frames"], data["accuracy_percent"]["Overall"]))


# the paper's Figure 8 draws the RL model in red and the model before RL in grey
FIGURE_COLOURS = ("#d62728", "#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd")


def frame_scaling_figure(runs: Sequence[tuple[str, dict[int, float]]], out_dir: str | Path,
                         title: str = "Accuracy against input frames") -> tuple[Path, Path]:
    """``frame_scaling.png`` (one line per run; the first red, the second grey) and
    ``frame_scaling.md`` (frames x runs) in ``out_dir``; returns both paths."""
    from lightning_longrl.eval.plot import line_chart

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = sorted({n for _, points in runs for n in points})
    series = {name: [points.get(n) for n in frames] for name, points in runs}
    png = line_chart(out / "frame_scaling.png", frames, series, title,
                     colours=dict(zip(series, FIGURE_COLOURS)), uniform_width=True)
    lines = ["| Frames | " + " | ".join(name for name, _ in runs) + " |", "|---:|" + "---:|" * len(runs)]
    for n in frames:
        lines.append(f"| {n} | " + " | ".join("-" if s[frames.index(n)] is None else f"{s[frames.index(n)]:.1f}"
                                             for s in series.values()) + " |")
    md = out / "frame_scaling.md"
    md.write_text("\n".join(lines) + "\n")
    return png, md
