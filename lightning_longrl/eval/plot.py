"""Charts as PNG files, drawn with matplotlib (headless Agg backend): a line chart (accuracy
against frames, training curves) and a bar chart (histograms)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
"""Default colour cycle: the first series (overall accuracy, or the trained model) is red."""


def _figure(size: tuple[int, int]):
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a notebook's inline backend is left alone
    from matplotlib.figure import Figure

    return Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)  # not registered with pyplot: nothing leaks


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def line_chart(path: str | Path, x: Sequence[float], series: Mapping[str, Sequence[float | None]], title: str,
               x_label: str = "frames", y_label: str = "accuracy (%)", log_x: bool = True,
               size: tuple[int, int] = (900, 560), colours: Mapping[str, str] | None = None,
               uniform_width: bool = False) -> Path:
    """Write one line per series (``None`` points are skipped) over ``x`` (log2 scale by default).

    The first series is drawn thickest (the overall accuracy, by convention of the callers) unless
    ``uniform_width``; ``colours`` maps series names to colours (others take the default cycle).
    """
    if not x or not series:
        raise ValueError("line_chart needs x values and at least one series")
    fig = _figure(size)
    ax = fig.add_subplot()
    for k, (name, ys) in enumerate(series.items()):
        points = [(xv, yv) for xv, yv in zip(x, ys) if yv is not None]
        colour = (colours or {}).get(name, COLOURS[k % len(COLOURS)])
        width = 2.5 if uniform_width else (3.5 if k == 0 else 2.0)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colour, linewidth=width, label=name)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(list(x), [f"{v:g}" for v in x])
    ax.set_ylim(bottom=0)
    ax.grid(True, color="#e0e0e0")
    ax.set(title=title, xlabel=x_label, ylabel=y_label)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def bar_chart(path: str | Path, labels: Sequence[str], values: Sequence[float], title: str, x_label: str = "",
              y_label: str = "", size: tuple[int, int] = (900, 520)) -> Path:
    """Write one bar per label, with its value printed above it."""
    if not labels or len(labels) != len(values):
        raise ValueError("bar_chart needs as many values as labels, at least one")
    fig = _figure(size)
    ax = fig.add_subplot()
    bars = ax.bar([str(label) for label in labels], values, color=COLOURS[1])
    ax.bar_label(bars, labels=[f"{v:g}" for v in values])
    ax.set_ylim(0, max(max(values), 1) * 1.12)
    ax.grid(True, axis="y", color="#e0e0e0")
    ax.set_axisbelow(True)
    ax.set(title=title, xlabel=x_label, ylabel=y_label)
    fig.tight_layout()
    return _save(fig, path)
