"""Charts as PNG files drawn with Pillow (no plotting library needed): a line chart (accuracy
against frames, training curves) and a bar chart (histograms)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


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
    width, height = size
    left, right, top, bottom = 80, 220, 50, 70
    image, draw, font = _canvas(size)
    xs = [math.log2(v) if log_x else float(v) for v in x]
    x_min, x_max = min(xs), max(xs)
    if x_max == x_min:
        x_min, x_max = x_min - 1, x_max + 1
    values = [v for s in series.values() for v in s if v is not None]
    y_min = 0.0
    top_value = max(values) if values and max(values) > 0 else 1.0
    step = _nice_step(top_value / 5)
    y_max = step * math.ceil(top_value / step)
    ticks = round(y_max / step)

    def px(xv: float, yv: float) -> tuple[float, float]:
        return (left + (xv - x_min) / (x_max - x_min) * (width - left - right),
                height - bottom - (yv - y_min) / (y_max - y_min) * (height - top - bottom))

    # axes, grid and tick labels
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(ticks + 1):
        yv = y_min + step * i
        _, yp = px(x_min, yv)
        draw.line([left, yp, width - right, yp], fill="#e0e0e0")
        draw.text((left - 40, yp - 6), f"{yv:g}", fill="black", font=font)
    for xv, raw in zip(xs, x):
        xp, _ = px(xv, y_min)
        draw.line([xp, top, xp, height - bottom], fill="#e0e0e0")
        draw.text((xp - 10, height - bottom + 8), f"{raw:g}", fill="black", font=font)
    draw.text((left + (width - left - right) / 2 - 20, height - bottom + 30), x_label, fill="black", font=font)
    draw.text((10, top - 30), y_label, fill="black", font=font)
    draw.text((left, 15), title, fill="black", font=font)
    # series and legend
    for k, (name, ys) in enumerate(series.items()):
        colour = (colours or {}).get(name, _COLOURS[k % len(_COLOURS)])
        thick = 3 if uniform_width else (4 if k == 0 else 2)
        points = [px(xv, yv) for xv, yv in zip(xs, ys) if yv is not None]
        if len(points) > 1:
            draw.line(points, fill=colour, width=thick)
        for xp, yp in points:
            draw.ellipse([xp - 4, yp - 4, xp + 4, yp + 4], fill=colour)
        ly = top + 10 + 22 * k
        draw.line([width - right + 15, ly + 6, width - right + 45, ly + 6], fill=colour, width=thick)
        draw.text((width - right + 52, ly), name, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _canvas(size: tuple[int, int]):
    image = Image.new("RGB", size, "white")
    return image, ImageDraw.Draw(image), ImageFont.load_default()


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is at least ``raw``."""
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def bar_chart(path: str | Path, labels: Sequence[str], values: Sequence[float], title: str, x_label: str = "",
              y_label: str = "", size: tuple[int, int] = (900, 520)) -> Path:
    """Write one bar per label, with its value printed above it."""
    if not labels or len(labels) != len(values):
        raise ValueError("bar_chart needs as many values as labels, at least one")
    width, height = size
    left, right, top, bottom = 80, 30, 50, 70
    image, draw, font = _canvas(size)
    top_value = max(max(values), 1)
    step = _nice_step(top_value / 5)
    y_max = step * math.ceil(top_value / step)
    plot_h, plot_w = height - top - bottom, width - left - right
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(round(y_max / step) + 1):
        y = height - bottom - step * i / y_max * plot_h
        draw.line([left, y, width - right, y], fill="#e0e0e0")
        draw.text((left - 40, y - 6), f"{step * i:g}", fill="black", font=font)
    slot = plot_w / len(labels)
    for i, (label, value) in enumerate(zip(labels, values)):
        x0, x1 = left + slot * (i + 0.15), left + slot * (i + 0.85)
        y = height - bottom - value / y_max * plot_h
        draw.rectangle([x0, y, x1, height - bottom], fill=_COLOURS[1])
        draw.text(((x0 + x1) / 2 - 8, y - 14), f"{value:g}", fill="black", font=font)
        draw.text(((x0 + x1) / 2 - 12, height - bottom + 8), str(label), fill="black", font=font)
    draw.text((left + plot_w / 2 - 40, height - bottom + 32), x_label, fill="black", font=font)
    draw.text((10, top - 30), y_label, fill="black", font=font)
    draw.text((left, 15), title, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path

